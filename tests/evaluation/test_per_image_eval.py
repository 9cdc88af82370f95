"""Per-image re-accumulation of COCO AP (frn_det.evaluation.per_image) against pycocotools."""
import math

import numpy as np
import pytest
from coco_files import CAT_IDS, cocoeval_stats, make_coco

from frn_det.evaluation import METRICS, PerImageEval, bootstrap_weights


def assert_matches_stats(metrics, stats, tol=1e-9):
    for j, m in enumerate(METRICS):
        assert metrics[m] / 100 == pytest.approx(stats[j], abs=tol), m


@pytest.fixture(scope="module")
def dataset():
    return make_coco()


@pytest.fixture(scope="module")
def pie(dataset):
    gt, dets = dataset
    return PerImageEval.from_coco(gt, dets)


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
@pytest.mark.parametrize("score_decimals", [None, 1])
def test_point_estimate_equals_cocoeval(backend, score_decimals):
    gt, dets = make_coco(seed=1, score_decimals=score_decimals)
    stats = cocoeval_stats(gt, dets)
    assert stats[0] > 0.1 and stats[1] > stats[0]  # a non-trivial AP to compare
    pie = PerImageEval.from_coco(gt, dets, backend=backend)
    assert_matches_stats(pie.metrics(), stats)
    assert_matches_stats({m: v[0] for m, v in pie.metrics_for_weights(np.ones((1, 60), int)).items()}, stats)
    assert pie.n_images == 60 and list(pie.cat_ids) == CAT_IDS


def test_backends_keep_identical_arrays():
    gt, dets = make_coco(seed=2)
    a = PerImageEval.from_coco(gt, dets, backend="pycocotools")
    b = PerImageEval.from_coco(gt, dets, backend="faster_coco_eval")
    for name in ("gt_count", "det_img", "det_cat", "det_tp", "det_ignore"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("score_decimals", [None, 1])
def test_random_subsets_equal_cocoeval_on_subset(score_decimals):
    gt, dets = make_coco(seed=3, score_decimals=score_decimals)
    pie = PerImageEval.from_coco(gt, dets)
    rng = np.random.default_rng(0)
    W = (rng.random((30, pie.n_images)) < 0.5).astype(np.int32)
    boot = pie.metrics_for_weights(W, chunk_size=7)  # several chunks
    for b, w in enumerate(W):
        stats = cocoeval_stats(gt, dets, img_ids=pie.img_ids[w == 1].tolist())
        assert_matches_stats({m: boot[m][b] for m in METRICS}, stats)


def duplicate_images(gt, dets, weights, img_ids):
    """GT and detections where image img_ids[j] appears weights[j] times (copies get new ids)."""
    new_images, new_anns, new_dets = [], [], []
    by_img = {}
    for a in gt["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    dets_by_img = {}
    for d in dets:
        dets_by_img.setdefault(d["image_id"], []).append(d)
    next_id = 10**6
    for img_id, w in zip(img_ids, weights):
        for copy_index in range(w):
            new_id = img_id if copy_index == 0 else next_id
            next_id += 1
            new_images.append({"id": new_id, "width": 640, "height": 480})
            for a in by_img.get(img_id, []):
                new_anns.append({**a, "id": len(new_anns) + 1, "image_id": new_id})
            new_dets += [{**d, "image_id": new_id} for d in dets_by_img.get(img_id, [])]
    return {**gt, "images": new_images, "annotations": new_anns}, new_dets


def test_weights_equal_literally_duplicated_images(dataset, pie):
    gt, dets = dataset  # distinct scores: the only ties are between copies of a detection
    rng = np.random.default_rng(1)
    for _ in range(4):
        w = rng.integers(0, 4, size=pie.n_images)
        dup_gt, dup_dets = duplicate_images(gt, dets, w, pie.img_ids.tolist())
        got = {m: v[0] for m, v in pie.metrics_for_weights(w[None]).items()}
        assert_matches_stats(got, cocoeval_stats(dup_gt, dup_dets))


def test_bootstrap_weights_are_reproducible_resamples():
    W = bootstrap_weights(50, 200, seed=3)
    assert W.shape == (200, 50) and W.dtype == np.int32
    assert (W.sum(axis=1) == 50).all()  # n draws with replacement
    np.testing.assert_array_equal(W, bootstrap_weights(50, 200, seed=3))
    assert not np.array_equal(W, bootstrap_weights(50, 200, seed=4))
    assert 0.30 < (W == 0).mean() < 0.43  # P(image not drawn) -> 1/e


def test_no_ground_truth_in_resample_is_nan():
    gt, dets = make_coco(seed=4)
    pie = PerImageEval.from_coco(gt, dets)
    no_gt = np.array([pie.gt_count[i].sum() == 0 for i in range(pie.n_images)])
    w = no_gt.astype(np.int64)
    assert w.sum() > 0
    assert all(math.isnan(v) for v in pie.metrics(w).values())
