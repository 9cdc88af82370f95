"""Importing this package registers frn-det's backbones, meta architecture and ROI heads with Detectron2."""
from .box_head import FCNorm, FRNFastRCNNConvFCHead
from .fpn import build_frn_resnet_fpn_backbone, build_frn_retinanet_resnet_fpn_backbone
from .mask_head import FRNMaskRCNNConvUpsampleHead
from .resnet import build_frn_resnet_backbone
from .retinanet import FRNRetinaNet, FRNRetinaNetHead
