"""Importing this package registers frn-det's backbones and meta architecture with Detectron2."""
from .fpn import build_frn_resnet_fpn_backbone, build_frn_retinanet_resnet_fpn_backbone
from .resnet import build_frn_resnet_backbone
from .retinanet import FRNRetinaNet, FRNRetinaNetHead
