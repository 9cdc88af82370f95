"""COCO evaluation: the COCOeval backend, per-image re-accumulation (the bootstrap over
test images) and the interval model built on it.

These modules import neither Detectron2 nor torch themselves.
"""
from .coco_backend import coco_eval_class, install_fast_coco_eval
from .per_image import METRICS, PerImageEval, bootstrap_weights, load_gt

__all__ = [
    "METRICS",
    "PerImageEval",
    "bootstrap_weights",
    "load_gt",
    "coco_eval_class",
    "install_fast_coco_eval",
]
