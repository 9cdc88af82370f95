"""Stock Detectron2 configs with frn-det's norms: switch to the frn builders.

`--config-file COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml MODEL.RESNETS.NORM FRN ...`
names Detectron2's stock backbone, meta architecture and ROI heads, whose builders only
know Detectron2's own norm strings. frn-det's builders equal stock for stock norms (same
state_dict keys and shapes, same outputs), so they are swapped in, with one log line.
Where no frn builder stands in (a custom backbone or head), the config fails before any
model is built, naming the keys to set.
"""
import logging
from typing import List

from ..layers.registry import norm_names
from .tree import get_key

logger = logging.getLogger("frn_det")
BACKBONE_NORM_KEYS = ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM")
HEAD_NORM_KEYS = ("MODEL.RETINANET.NORM",)
STOCK_TO_FRN_BACKBONES = {
    "build_resnet_backbone": "build_frn_resnet_backbone",
    "build_resnet_fpn_backbone": "build_frn_resnet_fpn_backbone",
    "build_retinanet_resnet_fpn_backbone": "build_frn_retinanet_resnet_fpn_backbone",
}
FRN_BACKBONES = tuple(STOCK_TO_FRN_BACKBONES.values())
STOCK_TO_FRN_META = {"RetinaNet": "FRNRetinaNet"}
FRN_META = tuple(STOCK_TO_FRN_META.values())
# The R-CNN heads: the key naming each head -> {stock head: frn head}
STOCK_TO_FRN_ROI_HEADS = {
    "MODEL.ROI_BOX_HEAD.NAME": {"FastRCNNConvFCHead": "FRNFastRCNNConvFCHead"},
    "MODEL.ROI_MASK_HEAD.NAME": {"MaskRCNNConvUpsampleHead": "FRNMaskRCNNConvUpsampleHead"},
}
# Norm keys that only Detectron2's own heads read (frn-det has no builder for them).
UNSWITCHABLE_NORM_KEYS = ("MODEL.SEM_SEG_HEAD.NORM",)



def _set(cfg, dotted: str, value) -> None:
    parent, _, leaf = dotted.rpartition(".")
    node = cfg
    for part in parent.split("."):
        node = node[part]
    node[leaf] = value


def detectron2_norms() -> tuple:
    """Detectron2's get_norm strings ("" and the norm table's family "detectron2"): any other
    norm string needs frn-det's builders."""
    return ("",) + norm_names(family="detectron2")


def frn_only(value) -> bool:
    return isinstance(value, str) and value not in detectron2_norms()


def _roi_head_norm_keys(cfg, head: str) -> List[str]:
    """The keys of an ROI head ("MODEL.ROI_BOX_HEAD") that need frn-det's head: a norm only
    frn-det knows, or the box head's NORM_FCS with a norm (the stock head would silently
    leave its FCs without it)."""
    norm = get_key(cfg, f"{head}.NORM", None)
    keys = [f"{head}.NORM"] if frn_only(norm) else []
    if get_key(cfg, f"{head}.NORM_FCS", None) and norm:
        keys.append(f"{head}.NORM_FCS")
    return keys


def _switch(cfg, key: str, mapping: dict, why: str, changes: List[str], problems: List[str]) -> None:
    """Set `key` to frn-det's builder for its stock value; a value that is neither is a problem."""
    name = get_key(cfg, key, None)
    if name in mapping:
        _set(cfg, key, mapping[name])
        changes.append(f"{key}: {name} -> {mapping[name]}")
    elif name not in mapping.values():
        problems.append(f"{key}={name!r} cannot build {why}: set {key} to one of {list(mapping.values())}")


def _values(cfg, keys) -> str:
    return ", ".join(f"{k}={get_key(cfg, k, None)!r}" for k in keys)


def use_frn_builders(cfg, announce: bool = True) -> List[str]:
    """Switch a (defrosted) config's stock builders to frn-det's where its norms need them.

    Returns the "KEY: old -> new" changes (logged in one line when `announce`). Raises ValueError naming the
    keys to set when a norm only frn-det knows meets a builder that cannot take it.
    """
    changes, problems = [], []
    backbone_norms = [k for k in BACKBONE_NORM_KEYS if frn_only(get_key(cfg, k, None))]
    head_norms = [k for k in HEAD_NORM_KEYS if frn_only(get_key(cfg, k, None))]
    if backbone_norms or head_norms:
        _switch(cfg, "MODEL.BACKBONE.NAME", STOCK_TO_FRN_BACKBONES, _values(cfg, backbone_norms + head_norms),
                changes, problems)
    if head_norms:
        _switch(cfg, "MODEL.META_ARCHITECTURE", STOCK_TO_FRN_META, _values(cfg, head_norms), changes, problems)
    for key, mapping in STOCK_TO_FRN_ROI_HEADS.items():
        norm_keys = _roi_head_norm_keys(cfg, key.rpartition(".")[0])
        if norm_keys:
            _switch(cfg, key, mapping, _values(cfg, norm_keys), changes, problems)
    for key in UNSWITCHABLE_NORM_KEYS:
        value = get_key(cfg, key, None)
        if frn_only(value):
            problems.append(f"{key}={value!r} is read by Detectron2's own head, which only takes "
                            f"{[n for n in detectron2_norms() if n]}: set {key} to one of those")
    if problems:
        raise ValueError("this config cannot use frn-det's norms as it is: " + "; ".join(problems))
    if changes and announce:
        logger.info("frn-det norms with Detectron2's stock builders: using frn-det's builders, which equal "
                    "stock for stock norms (%s)", "; ".join(changes))
    return changes
