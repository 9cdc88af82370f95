"""Which COCOeval implementation frn-det (and Detectron2) use.

pycocotools' COCOeval runs its per-image matching and accumulation in Python loops.
Detectron2 ships a compiled replacement (`detectron2.evaluation.fast_eval_api.
COCOeval_opt`, built on `detectron2._C`); where `_C` is missing (the case for the
prebuilt sal-detectron2 wheel) it falls back to pycocotools. faster-coco-eval is a
maintained C++ port of the same code with a pycocotools-compatible API and identical
stats; this module picks it when it is importable.

- `coco_eval_class()`: the COCOeval class to use (faster-coco-eval, else pycocotools).
- `install_fast_coco_eval()`: point Detectron2's COCOEvaluator at it when Detectron2's
  own compiled fast path is missing. Idempotent; never replaces a working `_C` path.
"""
import logging

logger = logging.getLogger(__name__)

BACKEND_DETECTRON2 = "detectron2"  # Detectron2's compiled COCOeval_opt
BACKEND_FASTER = "faster_coco_eval"
BACKEND_PYCOCOTOOLS = "pycocotools"

_installed_backend = None  # set by install_fast_coco_eval(); logged once
_logged_fallback = False


def _faster_class():
    try:
        from faster_coco_eval import COCOeval_faster
    except ImportError:
        return None
    return COCOeval_faster


def coco_eval_class():
    """The COCOeval class: faster_coco_eval's `COCOeval_faster` when importable, else
    pycocotools' `COCOeval`. Both take (cocoGt, cocoDt, iouType) with pycocotools COCO
    objects and fill `.stats` and `.eval["precision"]` the same way."""
    global _logged_fallback
    cls = _faster_class()
    if cls is not None:
        return cls
    if not _logged_fallback:
        logger.info("faster-coco-eval is not installed; using pycocotools' COCOeval (slower).")
        _logged_fallback = True
    from pycocotools.cocoeval import COCOeval

    return COCOeval


def coco_eval_backend_name(cls=None):
    """'faster_coco_eval' or 'pycocotools' for `cls` (default: coco_eval_class())."""
    cls = coco_eval_class() if cls is None else cls
    return BACKEND_FASTER if cls.__module__.startswith("faster_coco_eval") else BACKEND_PYCOCOTOOLS


def install_fast_coco_eval():
    """Make Detectron2's COCOEvaluator use a compiled COCOeval; returns the backend name.

    Detectron2 (detectron2/evaluation/coco_evaluation.py) imports `COCOeval_opt` from
    `fast_eval_api` and, when `detectron2._C` is missing, binds `COCOeval_opt = COCOeval`
    (pycocotools). COCOEvaluator then sees `COCOeval_opt is COCOeval` at construction and
    turns `use_fast_impl` off; otherwise it looks `COCOeval_opt` up at call time. So
    rebinding the module global is enough for evaluators built afterwards. The default
    argument `cocoeval_fn=COCOeval_opt` of `_evaluate_predictions_on_coco` was bound at
    import, so it is rebound too, for callers that use the function directly.
    Must run before a COCOEvaluator is constructed.
    """
    global _installed_backend
    if _installed_backend is not None:
        return _installed_backend
    from detectron2.evaluation import coco_evaluation as ce

    if ce.COCOeval_opt is not ce.COCOeval:
        # Detectron2's compiled `_C` loaded: keep it.
        backend = BACKEND_DETECTRON2
    else:
        cls = _faster_class()
        if cls is None:
            backend = BACKEND_PYCOCOTOOLS
        else:
            ce.COCOeval_opt = cls
            fn = ce._evaluate_predictions_on_coco
            fn.__defaults__ = tuple(cls if d is ce.COCOeval else d for d in fn.__defaults__)
            backend = BACKEND_FASTER
    logger.info(
        {
            BACKEND_DETECTRON2: "COCO evaluation: Detectron2's compiled COCOeval_opt.",
            BACKEND_FASTER: "COCO evaluation: faster-coco-eval (Detectron2's compiled "
            "COCOeval_opt is not built).",
            BACKEND_PYCOCOTOOLS: "COCO evaluation: pycocotools' COCOeval (neither Detectron2's "
            "compiled COCOeval_opt nor faster-coco-eval is available).",
        }[backend]
    )
    _installed_backend = backend
    return backend
