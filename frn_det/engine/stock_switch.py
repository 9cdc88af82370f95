"""Stock Detectron2 configs with frn-det's norms: switch to the frn builders.

`--config-file COCO-Detection/retinanet_R_50_FPN_1x.yaml MODEL.RESNETS.NORM FRN ...`
names Detectron2's stock backbone and meta architecture, whose builders only know
Detectron2's own norm strings. frn-det's builders equal stock for stock norms (same
state_dict keys and shapes, same outputs), so they are swapped in, with one log line.
Where no frn builder stands in (a custom backbone, ROI heads), the config fails before
any model is built, naming the keys to set.
"""
import logging
from typing import List

from ..layers.factory import DETECTRON2_NORMS  # Detectron2's get_norm strings: others need frn-det's builders

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
# Norm keys that only Detectron2's own heads read (frn-det has no builder for them yet).
UNSWITCHABLE_NORM_KEYS = ("MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM", "MODEL.SEM_SEG_HEAD.NORM")


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if part not in node:
            return None
        node = node[part]
    return node


def frn_only(value) -> bool:
    return isinstance(value, str) and value not in DETECTRON2_NORMS


def use_frn_builders(cfg, announce: bool = True) -> List[str]:
    """Switch a (defrosted) config's stock builders to frn-det's where its norms need them.

    Returns the "KEY: old -> new" changes (logged in one line when `announce`). Raises ValueError naming the
    keys to set when a norm only frn-det knows meets a builder that cannot take it.
    """
    changes, problems = [], []
    backbone_norms = [k for k in BACKBONE_NORM_KEYS if frn_only(_get(cfg, k))]
    head_norms = [k for k in HEAD_NORM_KEYS if frn_only(_get(cfg, k))]
    if backbone_norms or head_norms:
        name = cfg.MODEL.BACKBONE.NAME
        if name in STOCK_TO_FRN_BACKBONES:
            cfg.MODEL.BACKBONE.NAME = STOCK_TO_FRN_BACKBONES[name]
            changes.append(f"MODEL.BACKBONE.NAME: {name} -> {cfg.MODEL.BACKBONE.NAME}")
        elif name not in FRN_BACKBONES:
            problems.append(
                f"MODEL.BACKBONE.NAME={name!r} cannot build {', '.join(f'{k}={_get(cfg, k)!r}' for k in backbone_norms + head_norms)}: "
                f"set MODEL.BACKBONE.NAME to one of {list(FRN_BACKBONES)}"
            )
    if head_norms:
        meta = cfg.MODEL.META_ARCHITECTURE
        if meta in STOCK_TO_FRN_META:
            cfg.MODEL.META_ARCHITECTURE = STOCK_TO_FRN_META[meta]
            changes.append(f"MODEL.META_ARCHITECTURE: {meta} -> {cfg.MODEL.META_ARCHITECTURE}")
        elif meta not in FRN_META:
            problems.append(
                f"MODEL.META_ARCHITECTURE={meta!r} has no frn-det head for {', '.join(f'{k}={_get(cfg, k)!r}' for k in head_norms)}: "
                f"set MODEL.META_ARCHITECTURE to one of {list(FRN_META)}"
            )
    for key in UNSWITCHABLE_NORM_KEYS:
        value = _get(cfg, key)
        if frn_only(value):
            problems.append(f"{key}={value!r} is read by Detectron2's own head, which only takes "
                            f"{[n for n in DETECTRON2_NORMS if n]}: set {key} to one of those")
    if problems:
        raise ValueError("this config cannot use frn-det's norms as it is: " + "; ".join(problems))
    if changes and announce:
        logger.info("frn-det norms with Detectron2's stock builders: using frn-det's builders, which equal "
                    "stock for stock norms (%s)", "; ".join(changes))
    return changes
