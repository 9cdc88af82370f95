"""Mask R-CNN sweep folders written without training: polygon ground truth, shifted masks
and boxes, and each run's records (report tests)."""
import contextlib
import io
import json
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from frn_det.record.metrics import DETECTIONS_FILE, METRIC_KEYS, OUTCOME_FILE
from frn_det.sweep.running.runner import _result_fields
from frn_det.sweep.running.worker import evaluation_records

N_IMAGES, SIZE = 40, 160


DATASET = "frn_masks_test_val"


def polygon_mask(polygon, size=SIZE) -> np.ndarray:
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects([polygon], size, size)))


def write_gt(path: Path, seed: int = 0) -> list:
    """Quadrilaterals as polygons, of all sizes (COCO's small/medium/large by mask area)."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(1, N_IMAGES + 1):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": SIZE, "height": SIZE})
        for _ in range(int(rng.integers(1, 4))):
            x, y = (float(v) for v in rng.uniform(0, 80, 2))
            w, h = (float(v) for v in rng.uniform(12, 70, 2))
            polygon = [x, y, x + w, y, x + w, y + 0.5 * h, x + 0.3 * w, y + h]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(rng.integers(1, 3)),
                         "segmentation": [polygon], "bbox": [x, y, w, h],
                         "area": float(polygon_mask(polygon).sum()), "iscrowd": 0})
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    return anns


def write_dets(path: Path, anns: list, shift: int, box_jitter: float, seed: int) -> None:
    """Each ground truth's mask moved by up to `shift` px (box: the mask's box moved by up to
    `box_jitter` px), plus a false positive per image; RLE counts as text, as Detectron2 has them."""
    rng = np.random.default_rng(seed)
    dets = []
    for a in anns:
        m = polygon_mask(a["segmentation"][0])
        m = np.roll(m, tuple(int(v) for v in rng.integers(-shift, shift + 1, 2)), axis=(0, 1))
        rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        box = [float(v) for v in mask_util.toBbox(rle)]
        box[:2] = [v + float(rng.uniform(-box_jitter, box_jitter)) for v in box[:2]]
        dets.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.uniform(0.3, 1)),
                     "bbox": box, "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    for i in range(1, N_IMAGES + 1):
        m = np.zeros((SIZE, SIZE), dtype=np.uint8, order="F")
        m[130:150, 130:150] = 1
        rle = mask_util.encode(m)
        dets.append(
            {
                "image_id": i,
                "category_id": 1,
                "score": float(rng.uniform(0, 0.5)),
                "bbox": [130.0, 130.0, 20.0, 20.0],
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dets))


def cocoeval(gt: Path, dets: Path, iou_type: str) -> dict:
    """What Detectron2's COCOEvaluator returns for one iou type (pycocotools, boxes dropped for
    segm as Detectron2 drops them), with a per-category key that the worker must leave out."""
    results = json.loads(dets.read_text())
    if iou_type == "segm":
        results = [{k: v for k, v in d.items() if k != "bbox"} for d in results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt))
        e = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
        e.evaluate()
        e.accumulate()
        e.summarize()
    out = {k: float(s * 100) if s >= 0 else float("nan") for k, s in zip(METRIC_KEYS, e.stats[:6])}
    return {**out, "AP-a": 12.5}


def recorded(results: dict) -> dict:
    """The six metrics as metrics.json holds them (NaN: null)."""
    return {k: None if np.isnan(results[k]) else results[k] for k in METRIC_KEYS}


def make_run(sweep: Path, gt: Path, anns: list, norm: str, ims: int, shift: int, box_jitter: float = 2.0,
             masks: bool = True, seed: int = 0) -> Path:
    """A run folder whose metrics.json is made as a sweep makes it: COCOEvaluator's results ->
    worker.evaluation_records -> outcome.json -> runner._result_fields."""
    name = f"{norm}_ims{ims}_seed{seed}"
    run_dir = sweep / name
    dets = run_dir / "inference" / DATASET / DETECTIONS_FILE
    write_dets(
        dets, anns, shift, box_jitter, seed=zlib.crc32(repr((norm, ims, seed)).encode()) % 1000
    )  # the same in every process
    results = {"bbox": cocoeval(gt, dets, "bbox")}
    if masks:
        results["segm"] = cocoeval(gt, dets, "segm")
    cfg = SimpleNamespace(DATASETS=SimpleNamespace(TEST=(DATASET,)), OUTPUT_DIR=str(run_dir))
    outcome = {"status": "finished", "evaluation": evaluation_records(cfg, results), "iterations": 100}
    (run_dir / OUTCOME_FILE).write_text(json.dumps(outcome))
    fields = _result_fields(run_dir, None, SimpleNamespace(total_batch=ims), test=DATASET, tune=None)
    record = {"run": name, "norm": norm, "ims_per_gpu": ims, "total_batch": ims, "seed": seed, "lr_scale": 1.0,
              "model": "mask_rcnn" if masks else "faster_rcnn", "dataset": "shapes", **fields}
    (run_dir / "metrics.json").write_text(json.dumps(record))
    return run_dir
