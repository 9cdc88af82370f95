"""LazyCall-friendly builders of frn-det's models, for Detectron2's Python LazyConfigs.

The yacs builders (resnet.py, fpn.py, retinanet.py) read a CfgNode; these take plain
arguments and share their code, so a LazyConfig model is module for module the YAML one
(same state_dict, same outputs, the same TLU-for-ReLU swaps):

    model = L(FRNRetinaNet)(
        backbone=L(make_frn_fpn)(
            bottom_up=L(ResNet)(
                stem=L(make_frn_stem)(in_channels=3, out_channels=64, norm="${..stages.norm}"),
                stages=L(make_frn_stages)(depth=50, norm="FRN"),
                out_features=["res3", "res4", "res5"],
            ),
            in_features=["res3", "res4", "res5"], out_channels=256, norm="${.bottom_up.stages.norm}",
            top_block=L(LastLevelP6P7)(in_channels=2048, out_channels="${..out_channels}"),
        ),
        head=L(make_frn_retinanet_head)(..., norm="${..backbone.bottom_up.stages.norm}"),
        ...
    )

`norm` takes the strings of MODEL.*.NORM ("FRN", "GN", "BN", "GN+TLU", "EvoNormS0", ...:
frn_det.layers.grammar.parse_norm), a NormFactory, or any importable callable
`channels -> nn.Module` (Detectron2's convention; a ReLU follows it). `norm_options`
(frn_det.layers.NormOptions, e.g. `L(NormOptions)(frn=L(FRNOptions)(eps=1e-5))`) carries
what MODEL.FRN / BRN / EVONORM / WS hold in yacs; None means their defaults.
`norm_options_config(options)` writes such a node. `FRNRetinaNet` itself takes plain arguments
(Detectron2's @configurable), as RetinaNet does; so do the R-CNN heads FRNFastRCNNConvFCHead
(`conv_norm`, `fc_norm`, `norm_options`) and FRNMaskRCNNConvUpsampleHead (`conv_norm`,
`norm_options`), which take the same norm strings: configs/lazy/common/models/mask_rcnn_frn.py
LazyCalls them in Detectron2's GeneralizedRCNN / StandardROIHeads.

lazy_bridge.py builds a LazyConfig's model from a YAML config (MODEL.LAZY_CONFIG).
"""
import dataclasses
from typing import List, Optional

from detectron2.config.instantiate import dump_dataclass
from detectron2.layers import ShapeSpec

from ..layers import NormOptions
from ..layers.factory import resolve_norm_arg
from .fpn import make_norm_fpn
from .resnet import NormActStem, make_norm_act_stages, standardize_for
from .retinanet import FRNRetinaNetHead, head_norm

__all__ = [
    "make_frn_stem",
    "make_frn_stages",
    "make_frn_fpn",
    "make_frn_retinanet_head",
    "norm_options_config",
]

_STAGE_KEYS = {
    "depth": "model.backbone.bottom_up.stages.depth",
    "res5_dilation": "model.backbone.bottom_up.stages.res5_dilation",
    "num_groups": "model.backbone.bottom_up.stages.num_groups",
}


def make_frn_stem(in_channels: int = 3, out_channels: int = 64, *, norm="BN",
                  norm_options: Optional[NormOptions] = None,
                  key: str = "model.backbone.bottom_up.stem.norm") -> NormActStem:
    """Detectron2's BasicStem (conv 7x7 + norm + activation + max-pool) with the norm's
    activation: none after FRN+TLU / EvoNorm, TLU for "X+TLU", ReLU otherwise."""
    resolved = resolve_norm_arg(norm, key=key, options=norm_options)
    stem = NormActStem(in_channels, out_channels, norm=resolved)
    standardize_for(resolved, [stem])
    return stem


def make_frn_stages(depth: int = 50, *, norm="BN", in_channels: int = 64, out_channels: Optional[int] = None,
                    num_groups: int = 1, width_per_group: int = 64, stride_in_1x1: bool = False,
                    res5_dilation: int = 1, norm_options: Optional[NormOptions] = None,
                    key: str = "model.backbone.bottom_up.stages.norm"):
    """The stages of build_frn_resnet_backbone (a list of lists of blocks, for ResNet's
    `stages`), like ResNet.make_default_stages but with frn-det's blocks and widths.

    in_channels: the stem's output channels (MODEL.RESNETS.STEM_OUT_CHANNELS);
    out_channels: res2's output channels (MODEL.RESNETS.RES2_OUT_CHANNELS; default 64 for
    R18/R34, 256 otherwise). The other arguments are MODEL.RESNETS' lower-cased keys.
    """
    if out_channels is None:
        out_channels = 64 if depth in (18, 34) else 256
    resolved = resolve_norm_arg(norm, key=key, options=norm_options)
    stages = make_norm_act_stages(
        depth, resolved, in_channels=in_channels, out_channels=out_channels, num_groups=num_groups,
        width_per_group=width_per_group, stride_in_1x1=stride_in_1x1, res5_dilation=res5_dilation,
        keys=_STAGE_KEYS,
    )
    standardize_for(resolved, [block for stage in stages for block in stage])
    return stages


def make_frn_fpn(bottom_up, in_features, out_channels: int, norm="", top_block=None, fuse_type: str = "sum", *,
                 norm_options: Optional[NormOptions] = None, key: str = "model.backbone.norm", **kwargs):
    """Detectron2's FPN with frn-det's norm (normalization only: FRN without TLU, "X+TLU"
    as X): build_frn_retinanet_resnet_fpn_backbone's FPN, from arguments."""
    return make_norm_fpn(bottom_up, in_features, out_channels, norm, top_block, fuse_type, key=key,
                         options=norm_options, **kwargs)


def make_frn_retinanet_head(*, input_shape: List[ShapeSpec], num_classes: int, num_anchors: int,
                            conv_dims: List[int], norm="", prior_prob: float = 0.01,
                            norm_options: Optional[NormOptions] = None,
                            key: str = "model.head.norm") -> FRNRetinaNetHead:
    """FRNRetinaNetHead from arguments (RetinaNetHead's), with the norm resolved as for
    MODEL.RETINANET.NORM: the norm's activation after each conv+norm, per-level
    statistics for BN-like norms."""
    input_shape = [s if isinstance(s, ShapeSpec) else ShapeSpec(**dict(s)) for s in input_shape]
    return FRNRetinaNetHead(
        input_shape=input_shape,
        num_classes=num_classes,
        num_anchors=num_anchors,
        conv_dims=list(conv_dims),
        norm=head_norm(norm, len(input_shape), key=key, options=norm_options),
        prior_prob=prior_prob,
    )


def norm_options_config(options: Optional[NormOptions] = None) -> dict:
    """A LazyCall dict that instantiates to `options` (default NormOptions()): what the
    LazyConfigs hold as `norm_options`, and Trainer.build_model sets from MODEL.FRN etc."""
    options = NormOptions() if options is None else options
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"expected a NormOptions, got {type(options).__name__}")
    return dump_dataclass(options)
