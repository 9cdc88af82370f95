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
frn_det.layers.factory.parse_norm), a NormFactory, or any importable callable
`channels -> nn.Module` (Detectron2's convention; a ReLU follows it). `norm_options`
(frn_det.layers.NormOptions, e.g. `L(NormOptions)(frn=L(FRNOptions)(eps=1e-5))`) carries
what MODEL.FRN / BRN / EVONORM / WS hold in yacs; None means their defaults.
`norm_options_config(options)` writes such a node. `FRNRetinaNet` itself takes plain arguments
(Detectron2's @configurable), as RetinaNet does; so do the R-CNN heads FRNFastRCNNConvFCHead
(`conv_norm`, `fc_norm`, `norm_options`) and FRNMaskRCNNConvUpsampleHead (`conv_norm`,
`norm_options`), which take the same norm strings: configs/lazy/common/models/mask_rcnn_frn.py
LazyCalls them in Detectron2's GeneralizedRCNN / StandardROIHeads.
"""
import dataclasses
import os
from pathlib import Path
from typing import List, Optional, Union

from detectron2.config import LazyConfig, instantiate
from detectron2.config.instantiate import dump_dataclass
from detectron2.layers import ShapeSpec
from omegaconf import OmegaConf

from ..layers.factory import NormOptions, resolve_norm_arg
from ..utils.paths import CONFIGS_DIR
from .fpn import make_norm_fpn
from .resnet import NormActStem, make_norm_act_stages, standardize_for
from .retinanet import FRNRetinaNetHead, head_norm

__all__ = [
    "make_frn_stem",
    "make_frn_stages",
    "make_frn_fpn",
    "make_frn_retinanet_head",
    "norm_options_config",
    "CONFIGS_DIR",
    "resolve_lazy_config",
    "LAZY_NORM_KEYS",
    "apply_yacs_model_keys",
    "lazy_model_has_masks",
    "build_lazy_model",
]

# Where each norm of the shipped LazyConfigs lives (configs/lazy/): the first is the one
# place the others follow through OmegaConf interpolation.
LAZY_NORM_KEYS = {
    "MODEL.RESNETS.NORM": ("model.backbone.bottom_up.stages.norm", "model.backbone.bottom_up.stem.norm"),
    "MODEL.FPN.NORM": ("model.backbone.norm",),
    "MODEL.RETINANET.NORM": ("model.head.norm",),
    "MODEL.ROI_BOX_HEAD.NORM": ("model.roi_heads.box_head.conv_norm",),
    "MODEL.ROI_MASK_HEAD.NORM": ("model.roi_heads.mask_head.conv_norm",),
}
# the repository's configs/ folder (LazyConfig paths of the sweep are relative to it)

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


def resolve_lazy_config(path: Union[str, os.PathLike]) -> str:
    """The file a LazyConfig path names: an absolute path as is; a relative one relative to
    the repository's configs/ when the file is there (e.g. "lazy/tiny_retinanet_cpu.py"),
    else relative to the current directory (e.g. "configs/lazy/tiny_retinanet_cpu.py")."""
    p = Path(path).expanduser()
    if not p.is_absolute() and (CONFIGS_DIR / p).is_file():
        p = CONFIGS_DIR / p
    if not p.is_file():
        raise FileNotFoundError(
            f"LazyConfig {str(path)!r} not found (neither in {CONFIGS_DIR} nor relative to {os.getcwd()})"
        )
    return str(p.resolve())


def _has(cfg, dotted: str) -> bool:
    parent, _, leaf = dotted.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    return OmegaConf.is_dict(node) and leaf in node


def lazy_model_has_masks(lazy_cfg) -> bool:
    """Whether a LazyConfig's model predicts masks: ROI heads with a mask head and mask
    features (StandardROIHeads' mask_on), as in configs/lazy/common/models/mask_rcnn_frn.py."""
    roi_heads = OmegaConf.select(lazy_cfg, "model.roi_heads", default=None)
    return (OmegaConf.is_dict(roi_heads) and roi_heads.get("mask_head") is not None
            and roi_heads.get("mask_in_features") is not None)


def apply_yacs_model_keys(lazy_cfg, cfg) -> list:
    """Set a loaded LazyConfig's model from a yacs config, where the lazy model has the
    keys: the norms (MODEL.RESNETS.NORM / FPN.NORM / RETINANET.NORM / ROI_BOX_HEAD.NORM /
    ROI_MASK_HEAD.NORM at LAZY_NORM_KEYS; MODEL.ROI_BOX_HEAD.NORM_FCS as the box head's
    `fc_norm`), their options (MODEL.FRN / BRN / EVONORM / WS as `norm_options` next to each
    norm), the class counts (MODEL.RETINANET.NUM_CLASSES; MODEL.ROI_HEADS.NUM_CLASSES for the
    ROI heads, their box predictor and mask head, 1 for the mask head with
    MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK) and MODEL.PIXEL_MEAN / PIXEL_STD. Returns the keys set.

    MODEL.MASK_ON must agree with the lazy model (a mask head or none): the yacs config's
    data loader loads masks and its evaluator asks for mask AP by MODEL.MASK_ON."""
    if bool(cfg.MODEL.MASK_ON) != lazy_model_has_masks(lazy_cfg):
        raise ValueError(
            f"MODEL.MASK_ON={cfg.MODEL.MASK_ON} but the LazyConfig's model has "
            + ("a mask head (model.roi_heads.mask_head): set MODEL.MASK_ON True (masks in the data, mask AP) "
               "or name a Faster R-CNN LazyConfig"
               if lazy_model_has_masks(lazy_cfg) else
               "no mask head (model.roi_heads.mask_head): set MODEL.MASK_ON False or name a Mask R-CNN LazyConfig")
        )
    options = norm_options_config(NormOptions.from_config(cfg))
    values = {}
    for yacs_key, lazy_keys in LAZY_NORM_KEYS.items():
        node = cfg
        for part in yacs_key.split("."):
            node = node[part]
        for key in lazy_keys:
            values[key] = node
            values[key.rpartition(".")[0] + ".norm_options"] = options
    box_head = cfg.MODEL.ROI_BOX_HEAD
    values["model.roi_heads.box_head.fc_norm"] = box_head.NORM if box_head.get("NORM_FCS", False) else ""
    values["model.num_classes"] = cfg.MODEL.RETINANET.NUM_CLASSES
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    values["model.roi_heads.num_classes"] = num_classes
    values["model.roi_heads.box_predictor.num_classes"] = num_classes
    values["model.roi_heads.mask_head.num_classes"] = 1 if cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK else num_classes
    values["model.pixel_mean"] = list(cfg.MODEL.PIXEL_MEAN)
    values["model.pixel_std"] = list(cfg.MODEL.PIXEL_STD)
    done = []
    for key, value in values.items():
        if _has(lazy_cfg, key):
            OmegaConf.update(lazy_cfg, key, value, merge=False)
            done.append(key)
    return done


def build_lazy_model(cfg):
    """The model of the LazyConfig named by cfg.MODEL.LAZY_CONFIG (see resolve_lazy_config),
    with the yacs config's norms, norm options, class count and pixel statistics applied
    (apply_yacs_model_keys), on cfg.MODEL.DEVICE."""
    path = resolve_lazy_config(cfg.MODEL.LAZY_CONFIG)
    lazy_cfg = LazyConfig.load(path)  # the whole config: interpolations may point anywhere in it
    model_cfg = OmegaConf.select(lazy_cfg, "model", default=None)
    if not (OmegaConf.is_dict(model_cfg) and "_target_" in model_cfg):
        raise ValueError(f"MODEL.LAZY_CONFIG={cfg.MODEL.LAZY_CONFIG!r}: {path} has no LazyCall `model`")
    apply_yacs_model_keys(lazy_cfg, cfg)
    return instantiate(lazy_cfg.model).to(cfg.MODEL.DEVICE)
