"""Load a Python LazyConfig: Detectron2's LazyConfig.load and apply_overrides, with an
unknown override an error naming the nearest keys, the model and data checked to agree on
masks, the trackers checked and a CPU fallback (tools/lazyconfig_train_net.py's config).
The values are checked by checks.check_config."""
import logging
import os

import torch
from detectron2.config import LazyConfig
from omegaconf import OmegaConf

from .checks import check_lazy_overrides
from .tracking import DEFAULT_LOGGERS, check_loggers

__all__ = ["load_config", "check_masks", "lazy_model_has_masks", "name_list"]

logger = logging.getLogger("frn_det")


def load_config(config_file: str, opts=()):
    """LazyConfig.load + apply_overrides (Hydra grammar; an override of an unknown key is a
    ConfigError with the nearest keys), check_masks, and a CPU fallback for
    train.device=cuda* without CUDA. The values are checked by check_config."""
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"LazyConfig {config_file!r} not found")
    cfg = LazyConfig.load(config_file)
    check_lazy_overrides(cfg, list(opts))
    cfg = LazyConfig.apply_overrides(cfg, list(opts))
    check_masks(cfg)
    check_loggers(OmegaConf.select(cfg, "train.tracking.loggers", default=DEFAULT_LOGGERS), "train.tracking.loggers")
    device = OmegaConf.select(cfg, "train.device", default=None)
    if isinstance(device, str) and device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("train.device=%s but CUDA is not available: running on CPU", device)
        cfg.train.device = "cpu"
    return cfg


def check_masks(cfg) -> None:
    """Raise ValueError where the model and the data disagree on instance masks: a model
    with a mask head (model.roi_heads.mask_head, Mask R-CNN) trained by a mapper that does
    not load them (dataloader.train.mapper.use_instance_mask), which would fail at the
    first step for want of gt_masks, or mask AP asked of a model without a mask head
    (dataloader.evaluator.tasks with "segm"), which would fail after inference. Warns when
    a Mask R-CNN is evaluated without "segm". Keys a config lacks are not checked."""
    has_mask = lazy_model_has_masks(cfg)
    use_mask = OmegaConf.select(cfg, "dataloader.train.mapper.use_instance_mask", default=None)
    if has_mask and use_mask is not None and not use_mask:
        raise ValueError(
            "the model has a mask head (model.roi_heads.mask_head) but dataloader.train.mapper.use_instance_mask="
            f"{use_mask}: Mask R-CNN trains on the instance masks; set it True (configs/lazy/common/data/"
            "coco_masks.py and shapes_masks.py do)"
        )
    tasks = OmegaConf.select(cfg, "dataloader.evaluator.tasks", default=None)
    if tasks is None:
        return
    tasks = name_list(tasks)
    if "segm" in tasks and not has_mask:
        raise ValueError(
            f"dataloader.evaluator.tasks={tasks} asks for mask AP (segm) but the model has no mask head "
            "(model.roi_heads.mask_head); evaluate [bbox] only"
        )
    if has_mask and "segm" not in tasks:
        logger.warning("dataloader.evaluator.tasks=%s: the Mask R-CNN's masks are not evaluated (no \"segm\")", tasks)


def name_list(value) -> list:
    """A dataset name or a list of them (a LazyConfig's `names`, `tasks`) as a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def lazy_model_has_masks(lazy_cfg) -> bool:
    """Whether a LazyConfig's model predicts masks: ROI heads with a mask head and mask
    features (StandardROIHeads' mask_on), as in configs/lazy/common/models/mask_rcnn_frn.py."""
    roi_heads = OmegaConf.select(lazy_cfg, "model.roi_heads", default=None)
    return (OmegaConf.is_dict(roi_heads) and roi_heads.get("mask_head") is not None
            and roi_heads.get("mask_in_features") is not None)
