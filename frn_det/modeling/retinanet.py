"""RetinaNet whose head subnets use FRN's TLU in place of the ReLU.

RetinaNet.from_config hard-codes RetinaNetHead, so the head swap needs its own meta
architecture: MODEL.META_ARCHITECTURE = "FRNRetinaNet".
"""
from typing import List

from detectron2.config import configurable
from detectron2.layers import CycleBatchNormList, ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.meta_arch.retinanet import RetinaNet, RetinaNetHead
from torch import nn

from ..layers.norm import FRNOptions, NormFactory, resolve_norm

__all__ = ["FRNRetinaNetHead", "FRNRetinaNet"]


class FRNRetinaNetHead(RetinaNetHead):
    """RetinaNetHead with the norm resolved by frn-det and no ReLU after FRN+TLU.

    BN/SyncBN keep Detectron2's per-level statistics (CycleBatchNormList); the layer
    indices inside cls_subnet/bbox_subnet are unchanged, so checkpoints stay compatible.
    """

    @configurable
    def __init__(self, *, norm="", **kwargs):
        super().__init__(norm=norm, **kwargs)
        if isinstance(norm, NormFactory) and norm.includes_activation:
            for subnet in (self.cls_subnet, self.bbox_subnet):
                for i, layer in enumerate(subnet):
                    if isinstance(layer, nn.ReLU):
                        subnet[i] = nn.Identity()

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        norm = cfg.MODEL.RETINANET.NORM
        factory = resolve_norm(norm, key="MODEL.RETINANET.NORM", options=FRNOptions.from_config(cfg), tlu=True)
        if norm in ("BN", "SyncBN"):
            # Per-level BN statistics as in Detectron2, with a SyncBN that also runs on CPU.
            bn_class = factory.build
            factory = NormFactory(
                norm, lambda c: CycleBatchNormList(length=len(input_shape), bn_class=bn_class, num_features=c)
            )
        ret["norm"] = factory
        return ret


@META_ARCH_REGISTRY.register()
class FRNRetinaNet(RetinaNet):
    """RetinaNet with FRNRetinaNetHead; everything else is Detectron2's RetinaNet."""

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        backbone_shape = backbone.output_shape()
        feature_shapes = [backbone_shape[f] for f in cfg.MODEL.RETINANET.IN_FEATURES]
        # Same as RetinaNet.from_config except for the head class.
        return {
            "backbone": backbone,
            "head": FRNRetinaNetHead(cfg, feature_shapes),
            "anchor_generator": build_anchor_generator(cfg, feature_shapes),
            "box2box_transform": Box2BoxTransform(weights=cfg.MODEL.RETINANET.BBOX_REG_WEIGHTS),
            "anchor_matcher": Matcher(
                cfg.MODEL.RETINANET.IOU_THRESHOLDS,
                cfg.MODEL.RETINANET.IOU_LABELS,
                allow_low_quality_matches=True,
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "num_classes": cfg.MODEL.RETINANET.NUM_CLASSES,
            "head_in_features": cfg.MODEL.RETINANET.IN_FEATURES,
            "focal_loss_alpha": cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA,
            "smooth_l1_beta": cfg.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA,
            "box_reg_loss_type": cfg.MODEL.RETINANET.BBOX_REG_LOSS_TYPE,
            "test_score_thresh": cfg.MODEL.RETINANET.SCORE_THRESH_TEST,
            "test_topk_candidates": cfg.MODEL.RETINANET.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": cfg.MODEL.RETINANET.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "vis_period": cfg.VIS_PERIOD,
            "input_format": cfg.INPUT.FORMAT,
        }
