"""Build a Detectron2 config with frn-det's keys from a YAML file and command-line overrides:
the one path of tools/train_net.py, the sweep and the benchmarks."""
import logging
import os

import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg

from ..utils.paths import CONFIGS_DIR
from .checks import unknown_key_error
from .keys import add_frn_config
from .stock_switch import use_frn_builders

__all__ = ["resolve_config_file", "build_config"]

logger = logging.getLogger("frn_det")


def resolve_config_file(path: str) -> str:
    """A local file, one of frn-det's configs (e.g. tiny_retinanet_cpu.yaml), or a path inside
    Detectron2's model zoo (e.g. COCO-Detection/retinanet_R_50_FPN_1x.yaml)."""
    if os.path.isfile(path):
        return path
    if (CONFIGS_DIR / path).is_file():
        return str(CONFIGS_DIR / path)
    try:
        return model_zoo.get_config_file(path)
    except RuntimeError:
        raise FileNotFoundError(
            f"Config file {path!r} not found: neither a local file, nor in frn-det's configs ({CONFIGS_DIR}), "
            "nor in Detectron2's model zoo"
        ) from None


def build_config(config_file: str, opts=(), announce: bool = True):
    """Detectron2's config with frn-det's keys, the file and the overrides merged; stock
    builders switched to frn-det's where its norms need them (logged when `announce`)."""
    cfg = get_cfg()
    add_frn_config(cfg)
    if config_file:
        path = resolve_config_file(config_file)
        _merge(cfg, lambda: cfg.merge_from_file(path), path)
    _merge(cfg, lambda: cfg.merge_from_list(list(opts)), "the command-line overrides")
    use_frn_builders(cfg, announce)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE=%s but CUDA is not available: running on CPU", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def _merge(cfg, merge, source: str) -> None:
    """yacs' merge, with unknown keys reported with the nearest known key."""
    try:
        merge()
    except (KeyError, AssertionError) as e:
        better = unknown_key_error(e, cfg, source)
        if better is None:
            raise
        raise better from None
