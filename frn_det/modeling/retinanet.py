"""RetinaNet whose head subnets take the activation that goes with the norm.

Detectron2's RetinaNetHead puts nn.ReLU() after each conv+norm of its subnets. Here that
slot holds the norm's activation (`NormFactory.activation`): nothing after norm+activation
layers (FRN+TLU, EvoNorm), a TLU for "X+TLU", the ReLU otherwise. BN-like norms keep
per-level statistics (Detectron2 does so for BN and SyncBN; frn-det also for BRN, EvalNorm,
CBN and MABN). With "GNWS" the subnets' convs are weight-standardized (each W_hat computed
once per forward and shared by the levels; MABN centralizes, WN weight-normalizes them, CBN
links each level's norm to the shared conv).

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
from torch.nn.utils import parametrize

from ..config.keys import check_norm_config, norm_options_from_config
from ..layers import norm_spec
from ..layers.factory import NormFactory, resolve_norm
from ..layers.norms import CycleBatchRenormList, WSConv2d, standardized_once

__all__ = ["FRNRetinaNetHead", "FRNRetinaNet", "head_norm"]


class FRNRetinaNetHead(RetinaNetHead):
    """RetinaNetHead with the norm resolved by frn-det and the norm's activation after it.

    BN-like norms (the norm table's per_level) keep per-level statistics (CycleBatchNormList, or
    CycleBatchRenormList for BRN); the layer indices inside cls_subnet/bbox_subnet are
    unchanged, so checkpoints stay compatible.
    """

    @configurable
    def __init__(self, *, norm="", **kwargs):
        super().__init__(norm=norm, **kwargs)
        if isinstance(norm, NormFactory):
            for subnet in (self.cls_subnet, self.bbox_subnet):
                for i, layer in enumerate(subnet):
                    if isinstance(layer, nn.ReLU):  # after [conv, norm]
                        subnet[i] = norm.activation(subnet[i - 2].out_channels)
            norm.adapt([self.cls_subnet, self.bbox_subnet])

    def forward(self, features):
        ws_convs = [m for m in self.modules() if isinstance(m, WSConv2d)]
        # one W_hat per conv for all levels (GNWS, MABN's centralization, WN)
        with standardized_once(ws_convs), parametrize.cached():
            return super().forward(features)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        ret["norm"] = head_norm(cfg.MODEL.RETINANET.NORM, len(input_shape), key="MODEL.RETINANET.NORM",
                                options=norm_options_from_config(cfg))
        return ret


def head_norm(norm, num_levels: int, *, key: str, options=None):
    """The head's norm: a norm string (or NormFactory) resolved by frn-det; BN-like norms
    (the norm table's per_level) keep per-level statistics as in Detectron2 (a SyncBN that
    also runs on CPU), BRN too. Any other callable is returned as is (Detectron2's get_norm calls it)."""
    if not isinstance(norm, (str, NormFactory)):
        return norm
    factory = resolve_norm(norm, key=key, options=options)
    spec = norm_spec(factory.name) if isinstance(factory, NormFactory) else None
    if spec is not None and spec.per_level:
        bn_class = factory.build
        # Detectron2's list for its own (BN / SyncBN: parity), frn-det's (norm-parameter weight decay) otherwise
        cycle = CycleBatchNormList if spec.family == "detectron2" else CycleBatchRenormList
        factory = factory.with_build(lambda c: cycle(length=num_levels, bn_class=bn_class, num_features=c))
    return factory


@META_ARCH_REGISTRY.register()
class FRNRetinaNet(RetinaNet):
    """RetinaNet with FRNRetinaNetHead; everything else is Detectron2's RetinaNet."""

    @classmethod
    def from_config(cls, cfg):
        check_norm_config(cfg)  # all three norm keys, before anything is built
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
