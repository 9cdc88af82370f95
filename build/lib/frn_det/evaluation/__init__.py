"""COCO evaluation helpers: the COCOeval backend and bootstrap confidence intervals.

These modules import neither Detectron2 nor torch themselves.
"""
from .bootstrap import (
    METRICS,
    PerImageEval,
    bootstrap_ci,
    bootstrap_weights,
    paired_difference,
    seed_image_interval,
    seed_summary,
    t_quantile,
)
from .coco_backend import coco_eval_class, install_fast_coco_eval

__all__ = [
    "METRICS",
    "PerImageEval",
    "bootstrap_ci",
    "bootstrap_weights",
    "paired_difference",
    "seed_image_interval",
    "seed_summary",
    "t_quantile",
    "coco_eval_class",
    "install_fast_coco_eval",
]
