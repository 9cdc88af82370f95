"""A small COCO-format ground truth and detections, and COCOeval's stats of them
(evaluation tests)."""
import contextlib
import copy
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

CAT_IDS = [1, 3, 7, 8, 11]


NO_DET_CAT = 7  # has ground truth, never predicted


NO_GT_CAT = 11  # predicted, never in the ground truth (COCOeval: -1, skipped)


def make_coco(n_images=60, seed=0, jitter=0.08, score_decimals=None):
    """A small COCO-format GT dict and detection list: crowd boxes, images without GT,
    small/medium/large boxes, a category never detected and one never annotated."""
    rng = np.random.default_rng(seed)
    images = [{"id": 5 + 3 * i, "width": 640, "height": 480} for i in range(n_images)]
    annotations, dets = [], []
    for img in images:
        n_gt = 0 if rng.random() < 0.15 else int(rng.integers(1, 8))
        for _ in range(n_gt):
            cat = int(rng.choice(CAT_IDS[:-1]))
            w, h = np.exp(rng.uniform(np.log(6), np.log(300), size=2))
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            crowd = int(rng.random() < 0.08)
            annotations.append({"id": len(annotations) + 1, "image_id": img["id"], "category_id": cat,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": crowd})
            if cat == NO_DET_CAT:
                continue
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):  # misses and duplicates
                dx, dy, dw, dh = rng.normal(0, jitter, size=4) * [w, h, w, h]
                dets.append({"image_id": img["id"], "category_id": cat,
                             "bbox": [x + dx, y + dy, max(w + dw, 1.0), max(h + dh, 1.0)],
                             "score": float(rng.uniform(0.3, 1.0))})
        for _ in range(int(rng.integers(0, 5))):  # false positives, also on images without GT
            cat = int(rng.choice([c for c in CAT_IDS if c != NO_DET_CAT]))
            w, h = np.exp(rng.uniform(np.log(6), np.log(200), size=2))
            dets.append({"image_id": img["id"], "category_id": cat,
                         "bbox": [rng.uniform(0, 600), rng.uniform(0, 440), w, h],
                         "score": float(rng.uniform(0.0, 0.8))})
    if score_decimals is not None:  # ties in scores
        for d in dets:
            d["score"] = round(d["score"], score_decimals)
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": c, "name": f"c{c}"} for c in CAT_IDS]}
    return gt, dets


def to_coco(gt_dict):
    coco = COCO()
    coco.dataset = copy.deepcopy(gt_dict)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def cocoeval_stats(gt_dict, dets, img_ids=None):
    """pycocotools' official stats (12 numbers) for a GT dict and a detection list."""
    gt = to_coco(gt_dict)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(dets)), "bbox")
        if img_ids is not None:
            ev.params.imgIds = list(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats
