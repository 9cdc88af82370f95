"""COCOeval backend selection (frn_det.evaluation.coco_backend) and its Detectron2 hook."""
import contextlib
import copy
import io
import json
import logging
import sys
import uuid

import numpy as np
import pytest
from coco_files import cocoeval_stats, make_coco, to_coco
from pycocotools.cocoeval import COCOeval

from frn_det.evaluation import coco_backend

faster_coco_eval = pytest.importorskip("faster_coco_eval")
ce = pytest.importorskip("detectron2.evaluation.coco_evaluation")


def _d2_compiled_fast_path():
    try:
        import detectron2.evaluation.fast_eval_api  # noqa: F401  (needs detectron2._C)
    except ImportError:
        return False
    return True


@pytest.fixture
def fresh_install(monkeypatch):
    """Undo install_fast_coco_eval() after the test (module state, Detectron2 globals)."""
    monkeypatch.setattr(coco_backend, "_installed_backend", None)
    monkeypatch.setattr(ce, "COCOeval_opt", ce.COCOeval_opt)
    fn = ce._evaluate_predictions_on_coco
    monkeypatch.setattr(fn, "__defaults__", fn.__defaults__)


def test_coco_eval_class_is_faster_coco_eval():
    cls = coco_backend.coco_eval_class()
    assert cls is faster_coco_eval.COCOeval_faster
    assert coco_backend.coco_eval_backend_name(cls) == "faster_coco_eval"


@pytest.mark.parametrize("seed", [0, 5])
def test_faster_coco_eval_stats_equal_pycocotools(seed):
    gt_dict, dets = make_coco(seed=seed, score_decimals=2 if seed else None)
    ref = cocoeval_stats(gt_dict, dets)
    gt = to_coco(gt_dict)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = coco_backend.coco_eval_class()(gt, gt.loadRes(copy.deepcopy(dets)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert len(ref) == 12 and ref[0] > 0.1
    np.testing.assert_allclose(np.asarray(ev.stats[:12]), ref, rtol=0, atol=1e-6)


def test_falls_back_to_pycocotools_without_faster_coco_eval(monkeypatch, fresh_install, caplog):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # import now raises ImportError
    monkeypatch.setattr(coco_backend, "_logged_fallback", False)
    with caplog.at_level(logging.INFO, logger=coco_backend.__name__):
        assert coco_backend.coco_eval_class() is COCOeval
        assert coco_backend.coco_eval_class() is COCOeval
    assert sum("faster-coco-eval is not installed" in r.getMessage() for r in caplog.records) == 1
    if not _d2_compiled_fast_path():
        assert coco_backend.install_fast_coco_eval() == "pycocotools"
        assert ce.COCOeval_opt is ce.COCOeval


def test_never_replaces_a_compiled_detectron2_fast_path(monkeypatch, fresh_install):
    class CompiledCOCOevalOpt(COCOeval):  # stands in for detectron2._C's COCOeval_opt
        pass

    monkeypatch.setattr(ce, "COCOeval_opt", CompiledCOCOevalOpt)
    assert coco_backend.install_fast_coco_eval() == "detectron2"
    assert ce.COCOeval_opt is CompiledCOCOevalOpt


@pytest.mark.skipif(_d2_compiled_fast_path(), reason="Detectron2's compiled COCOeval_opt is built here")
def test_install_points_detectron2_at_faster_coco_eval(fresh_install, caplog, tmp_path):
    from detectron2.data import MetadataCatalog
    from detectron2.evaluation import COCOEvaluator

    assert ce.COCOeval_opt is ce.COCOeval  # Detectron2 fell back to pycocotools
    with caplog.at_level(logging.INFO, logger=coco_backend.__name__):
        assert coco_backend.install_fast_coco_eval() == "faster_coco_eval"
        assert coco_backend.install_fast_coco_eval() == "faster_coco_eval"  # idempotent
    assert sum("faster-coco-eval" in r.getMessage() for r in caplog.records) == 1  # logged once
    assert ce.COCOeval_opt is faster_coco_eval.COCOeval_faster

    gt_dict, dets = make_coco(seed=7)
    ref = cocoeval_stats(gt_dict, dets)
    # the function Detectron2's evaluator calls, with and without an explicit cocoeval_fn
    gt = to_coco(gt_dict)
    with contextlib.redirect_stdout(io.StringIO()):
        direct = ce._evaluate_predictions_on_coco(gt, copy.deepcopy(dets), "bbox")
    assert type(direct) is faster_coco_eval.COCOeval_faster
    np.testing.assert_allclose(np.asarray(direct.stats[:12]), ref, rtol=0, atol=1e-6)

    # COCOEvaluator built after the install takes the fast path and reports the same AP
    json_file = tmp_path / "gt.json"
    json_file.write_text(json.dumps(gt_dict))
    name = f"frn_det_test_coco_backend_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(json_file=str(json_file))
    try:
        evaluator = COCOEvaluator(name, tasks=("bbox",), distributed=False)
        assert evaluator._use_fast_impl  # -> cocoeval_fn=COCOeval_opt, i.e. faster-coco-eval
        by_image = {}
        for d in copy.deepcopy(dets):
            by_image.setdefault(d["image_id"], []).append(d)
        evaluator.reset()
        evaluator._predictions = [{"image_id": i, "instances": v} for i, v in by_image.items()]
        with contextlib.redirect_stdout(io.StringIO()):
            results = evaluator.evaluate()["bbox"]
    finally:
        MetadataCatalog.remove(name)
    for j, metric in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"]):
        expected = ref[j] * 100 if ref[j] >= 0 else float("nan")
        assert results[metric] == pytest.approx(expected, abs=1e-4, nan_ok=True), metric
