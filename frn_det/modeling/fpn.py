"""FPN backbones on the norm-aware ResNet.

FPN's lateral and output convs have no activation, so the FPN takes its norm without one
(`resolve_norm(..., activation=False)`): FRN there is normalization only (no TLU), "X+TLU"
is X, EvoNorm is its linear (affine) variant. With "GNWS" the lateral and output convs are
weight-standardized (MABN: centralized, WN: weight-normalized, CBN: linked to them). P6/P7 stay as
in Detectron2: plain convs with a ReLU between them.
"""
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7

from ..config.keys import norm_options_from_config
from ..layers.factory import NormFactory, resolve_norm
from .resnet import build_frn_resnet_backbone

__all__ = ["make_norm_fpn", "build_frn_resnet_fpn_backbone", "build_frn_retinanet_resnet_fpn_backbone"]


def make_norm_fpn(bottom_up, in_features, out_channels, norm="", top_block=None, fuse_type="sum", *,
                  key="MODEL.FPN.NORM", options=None, **kwargs):
    """Detectron2's FPN with the norm resolved by frn-det, without an activation (see the
    module docstring), and GNWS's weight-standardized convs. `norm`: a norm string, a
    NormFactory or a callable; `key` names it in errors; `options`: NormOptions."""
    norm = resolve_norm(norm, key=key, options=options, activation=False) if isinstance(norm, (str, NormFactory)) \
        else norm
    fpn = FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=out_channels,
        norm=norm,
        top_block=top_block,
        fuse_type=fuse_type,
        **kwargs,
    )
    if isinstance(norm, NormFactory):
        norm.adapt(list(fpn.lateral_convs) + list(fpn.output_convs))
    return fpn


def _fpn(cfg, bottom_up, top_block):
    return make_norm_fpn(bottom_up, cfg.MODEL.FPN.IN_FEATURES, cfg.MODEL.FPN.OUT_CHANNELS, cfg.MODEL.FPN.NORM,
                         top_block, cfg.MODEL.FPN.FUSE_TYPE, options=norm_options_from_config(cfg))


@BACKBONE_REGISTRY.register()
def build_frn_resnet_fpn_backbone(cfg, input_shape):
    """Like Detectron2's build_resnet_fpn_backbone (P2-P6), norm-aware."""
    return _fpn(cfg, build_frn_resnet_backbone(cfg, input_shape), LastLevelMaxPool())


@BACKBONE_REGISTRY.register()
def build_frn_retinanet_resnet_fpn_backbone(cfg, input_shape):
    """Like Detectron2's build_retinanet_resnet_fpn_backbone (P3-P7), norm-aware."""
    bottom_up = build_frn_resnet_backbone(cfg, input_shape)
    in_channels_p6p7 = bottom_up.output_shape()["res5"].channels
    return _fpn(cfg, bottom_up, LastLevelP6P7(in_channels_p6p7, cfg.MODEL.FPN.OUT_CHANNELS))
