"""Fixtures of the report tests: a Mask R-CNN sweep with intervals (results.md and results.tex)."""
import json

import pytest
from mask_runs import DATASET, make_run, write_gt

from frn_det.record.metrics import METRIC_KEYS


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from detectron2.data import MetadataCatalog

    root = tmp_path_factory.mktemp("report_masks")
    gt = root / "gt.json"
    anns = write_gt(gt)
    if DATASET in MetadataCatalog.list():
        MetadataCatalog.remove(DATASET)
    MetadataCatalog.get(DATASET).set(json_file=str(gt))
    return root, gt, anns


@pytest.fixture(scope="module")
def mask_sweep(files):
    """bn and gn with sloppy masks, frn with near-perfect ones, and a diverged gn run."""
    root, gt, anns = files
    d = root / "mask_sweep"
    make_run(d, gt, anns, "bn", 2, shift=6)
    make_run(d, gt, anns, "gn", 2, shift=6)
    make_run(d, gt, anns, "frn", 2, shift=1)
    (d / "gn_ims4_seed0").mkdir()
    (d / "gn_ims4_seed0" / "metrics.json").write_text(json.dumps(
        {"run": "gn_ims4_seed0", "norm": "gn", "ims_per_gpu": 4, "total_batch": 4, "status": "diverged",
         "diverged_at_iter": 37, **{k: None for k in METRIC_KEYS}}))
    return d
