"""The bridge from a yacs (YAML) config to a LazyConfig model: MODEL.LAZY_CONFIG names a
Python LazyConfig whose `model` Trainer.build_model builds, with the YAML config's norms,
norm options, class counts and pixel statistics applied (apply_yacs_model_keys)."""
import os
from pathlib import Path
from typing import Union

from detectron2.config import LazyConfig, instantiate
from omegaconf import OmegaConf

from ..config.keys import LAZY_NORM_KEYS, norm_options_from_config
from ..config.lazy import lazy_model_has_masks
from ..utils.paths import CONFIGS_DIR
from .lazy import norm_options_config

__all__ = ["resolve_lazy_config", "apply_yacs_model_keys", "build_lazy_model"]


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
    options = norm_options_config(norm_options_from_config(cfg))
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
