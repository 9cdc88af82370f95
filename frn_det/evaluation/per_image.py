"""COCO AP re-accumulated under per-image weights: the bootstrap over test images.

COCOeval (faster-coco-eval or pycocotools) matches detections to ground truth per image
once; only its accumulation is redone with an integer weight per image (an image drawn k
times counts k times), so all-ones weights reproduce COCOeval's AP, AP50 and AP75.
`bootstrap_weights` draws the resamples; they depend only on the image count and a seed,
so every run on the same test images is scored on the same resamples (a paired
bootstrap). The intervals made from these samples are in intervals.py (docs/intervals.md).
APs are percentages (x100).
"""
import contextlib
import io
import json

import numpy as np

METRICS = ("AP", "AP50", "AP75")
_EPS = np.spacing(1)  # pycocotools: pr = tp / (fp + tp + np.spacing(1))
_CHUNK_ELEMENTS = 1 << 22  # per-chunk array size when accumulating many resamples


class PerImageEval:
    """COCOeval's per-image matching results, kept as compact arrays, re-accumulated
    under any per-image weights.

    Detections of all categories are stored in COCOeval's accumulation order: category
    by category, images in `img_ids` order, stable-sorted by decreasing score.
    Build it with `from_coco` (runs COCOeval.evaluate once) or `from_coco_eval`.

    Attributes: img_ids (I,), cat_ids (K,), iou_thrs (T,), rec_thrs (R,), area, max_dets.
    """

    def __init__(self, img_ids, cat_ids, iou_thrs, rec_thrs, gt_count, det_img, det_cat,
                 det_tp, det_ignore, area="all", max_dets=100):
        """gt_count (I, K): non-ignored ground truth per image and category; det_img,
        det_cat (N,): image and category index of each detection, in accumulation order;
        det_tp, det_ignore (T, N): matched to a non-ignored / to an ignored ground truth
        (or unmatched outside the area range), per IoU threshold."""
        self.img_ids = np.asarray(img_ids, dtype=np.int64)
        self.cat_ids = np.asarray(cat_ids, dtype=np.int64)
        self.iou_thrs = np.asarray(iou_thrs, dtype=np.float64)
        self.rec_thrs = np.asarray(rec_thrs, dtype=np.float64)
        self.area, self.max_dets = area, int(max_dets)
        self.gt_count = np.asarray(gt_count, dtype=np.float64)  # float64: exact, and BLAS
        self.det_img = np.asarray(det_img, dtype=np.int64)
        self.det_cat = np.asarray(det_cat, dtype=np.int64)
        self.det_tp = np.asarray(det_tp, dtype=bool)
        self.det_ignore = np.asarray(det_ignore, dtype=bool)
        I, K, T, N = len(self.img_ids), len(self.cat_ids), len(self.iou_thrs), len(self.det_img)
        assert self.gt_count.shape == (I, K) and self.det_cat.shape == (N,)
        assert self.det_tp.shape == self.det_ignore.shape == (T, N)
        assert np.all(np.diff(self.det_cat) >= 0), "detections must be grouped by category"
        self._build_index()

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_coco(cls, coco_gt, coco_dt, iou_type="bbox", *, img_ids=None, area="all",
                  max_dets=100, backend="auto"):
        """Run COCOeval.evaluate() once and keep its per-image results.

        coco_gt: a pycocotools COCO, a COCO-format dict or a json path. coco_dt: a COCO
        from coco_gt.loadRes, a list of result dicts or a results json path. img_ids:
        evaluate on these images only (default: all of coco_gt's). backend: "auto"
        (faster-coco-eval when installed), "faster_coco_eval" or "pycocotools".
        iou_type "segm" scores the results' masks (their boxes are ignored, as Detectron2
        does, so the size ranges use the mask area).
        """
        gt = load_gt(coco_gt)
        dt = _load_dt(gt, coco_dt, drop_bbox=iou_type == "segm")
        coco_eval = _make_coco_eval(gt, dt, iou_type, backend)
        p = coco_eval.params
        if img_ids is not None:
            p.imgIds = sorted(int(i) for i in img_ids)
        # Match for the one area range and detection limit needed (a quarter of the work).
        p.areaRng = [p.areaRng[list(p.areaRngLbl).index(area)]]
        p.areaRngLbl = [area]
        p.maxDets = [int(max_dets)]
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco_eval.evaluate()
        return cls.from_coco_eval(coco_eval, area=area, max_dets=max_dets)

    @classmethod
    def from_coco_eval(cls, coco_eval, area="all", max_dets=100):
        """From a pycocotools COCOeval, or a faster-coco-eval COCOeval_faster built with
        separate_eval=True, after evaluate()."""
        p = coco_eval.params
        if max_dets > p.maxDets[-1]:
            raise ValueError(f"max_dets={max_dets} exceeds the evaluated maxDets {p.maxDets}")
        a = list(p.areaRngLbl).index(area)
        I, K, A, T = len(p.imgIds), len(p.catIds), len(p.areaRng), len(p.iouThrs)
        if getattr(coco_eval, "_evalImgs_cpp", None) is not None:
            records = _faster_records(coco_eval._evalImgs_cpp, I, K, A, T, a)
        elif isinstance(coco_eval.evalImgs, list) and len(coco_eval.evalImgs) == K * A * I:
            records = _pycocotools_records(coco_eval.evalImgs, I, K, A, a)
        else:
            raise ValueError(
                "coco_eval has no per-image results: call evaluate() first (faster-coco-eval "
                "needs COCOeval_faster(..., separate_eval=True))"
            )
        return cls._from_records(records, p, area, max_dets)

    @classmethod
    def _from_records(cls, records, p, area, max_dets):
        """records: (k, i, scores (D,), matched (T, D), ignored (T, D), n_valid_gt)."""
        I, K, T = len(p.imgIds), len(p.catIds), len(p.iouThrs)
        gt_count = np.zeros((I, K))
        ks, iis, ds, scores, matched, ignored = [], [], [], [], [], []
        for k, i, sc, m, ig, ngt in records:
            gt_count[i, k] = ngt
            d = min(len(sc), max_dets)
            if d:
                ks.append(k)
                iis.append(i)
                ds.append(d)
                scores.append(sc[:d])
                matched.append(m[:, :d])
                ignored.append(ig[:, :d])
        if ds:
            cats, imgs = np.repeat(ks, ds), np.repeat(iis, ds)
            scores = np.concatenate(scores).astype(np.float64)
            matched, ignored = np.concatenate(matched, axis=1), np.concatenate(ignored, axis=1)
        else:
            scores, cats, imgs = (np.zeros(0, dtype=np.int64),) * 3
            matched = ignored = np.zeros((T, 0), dtype=bool)
        # COCOeval.accumulate: per category, concatenate images in order, then a stable
        # sort by -score. Two stable sorts give the same order for all categories at once.
        order = np.argsort(-scores, kind="stable")
        order = order[np.argsort(cats[order], kind="stable")]
        return cls(
            p.imgIds, p.catIds, p.iouThrs, p.recThrs, gt_count, imgs[order], cats[order],
            matched[:, order] & ~ignored[:, order], ignored[:, order], area, max_dets,
        )

    def _build_index(self):
        """Precompute, for the true positives of every (IoU threshold, category) segment,
        where to read the weighted cumulative counts that accumulate() needs.

        Only true positives are kept: precision rises only at a true positive and recall
        thresholds are first reached at one, so the interpolated precision
        max(precision[i_r:]) is the max over the true positives from i_r on (0 if none).
        """
        K, N, T = len(self.cat_ids), len(self.det_img), len(self.iou_thrs)
        self._cat_start = np.searchsorted(self.det_cat, np.arange(K + 1))
        t, pos = np.nonzero(self.det_tp)  # t-major, positions ascending
        seg = t * K + self.det_cat[pos]
        ti, ipos = np.nonzero(self.det_ignore)
        iseg = ti * K + self.det_cat[ipos]
        self._tp_pos = pos  # position among all detections
        self._tp_img = self.det_img[pos]
        self._tp_cat = self.det_cat[pos]
        self._tp_seg = seg
        self._tp_seg_first = np.searchsorted(seg, seg)  # first true positive of the segment
        self._tp_cat_start = self._cat_start[self._tp_cat]
        self._ig_img = self.det_img[ipos]
        # ignored detections of the same segment before each true positive: [start, end)
        self._tp_ig_end = np.searchsorted(iseg * N + ipos, seg * N + pos)
        self._tp_ig_start = np.searchsorted(iseg, seg)
        self._n_segments = T * K
        self._img_det_count = np.bincount(self.det_img, minlength=len(self.img_ids)).astype(np.float64)

    # ------------------------------------------------------------------ evaluation
    @property
    def n_images(self):
        return len(self.img_ids)

    def metrics(self, weights=None):
        """{"AP", "AP50", "AP75"} (percent) for one weight per image (None: all ones,
        i.e. COCOeval's stats[0:3] x 100). NaN when no category has ground truth."""
        w = np.ones(self.n_images, dtype=np.int64) if weights is None else np.asarray(weights)
        return {m: float(v[0]) for m, v in self.metrics_for_weights(w[None]).items()}

    def metrics_for_weights(self, weights, chunk_size=None):
        """{"AP", "AP50", "AP75"} -> arrays (B,) in percent, for a (B, n_images) matrix of
        non-negative integer image weights (rows of `bootstrap_weights`)."""
        W = np.asarray(weights)
        if W.ndim != 2 or W.shape[1] != self.n_images:
            raise ValueError(f"weights must be (B, {self.n_images}), got {W.shape}")
        if not np.issubdtype(W.dtype, np.integer) or (W.size and W.min() < 0):
            raise ValueError("weights must be non-negative integers (counts per image)")
        per_row = max(len(self.det_img), len(self._tp_pos), self._n_segments * len(self.rec_thrs), 1)
        chunk = chunk_size or max(1, _CHUNK_ELEMENTS // per_row)
        parts = [self._accumulate(W[s:s + chunk]) for s in range(0, len(W), chunk)]
        return {m: np.concatenate([p[m] for p in parts]) if parts else np.zeros(0) for m in METRICS}

    def _accumulate(self, W):
        """COCOeval.accumulate + summarize (AP, AP50, AP75) for each row of W."""
        B, K, T = len(W), len(self.cat_ids), len(self.iou_thrs)
        R, S, C = len(self.rec_thrs), self._n_segments, len(self._tp_pos)
        # Integer counts are exact; int32 while the largest weighted detection count fits.
        max_total = (W.astype(np.float64) @ self._img_det_count).max(initial=0)
        itype = np.int32 if max_total < 2**31 else np.int64
        W = W.astype(itype, copy=False)

        def padded_cumsum(index):  # (B, len(index) + 1), column j = sum of the first j
            out = np.zeros((B, len(index) + 1), dtype=itype)
            np.cumsum(np.take(W, index, axis=1), axis=1, dtype=itype, out=out[:, 1:])
            return out

        npig = W.astype(np.float64) @ self.gt_count  # (B, K) non-ignored GT per category
        valid = npig > 0  # COCOeval leaves categories without GT at -1 and skips them
        prec = np.zeros((B, T, K, R))
        if C:
            # detections so far in the category (tp + fp), minus the ignored ones
            cw = padded_cumsum(self.det_img)
            n = cw[:, self._tp_pos + 1] - cw[:, self._tp_cat_start]
            if len(self._ig_img):
                cig = padded_cumsum(self._ig_img)
                n -= cig[:, self._tp_ig_end] - cig[:, self._tp_ig_start]
            ctp = padded_cumsum(self._tp_img)
            tp = (ctp[:, 1:] - ctp[:, self._tp_seg_first]).astype(np.float64)
            pr = tp / (n.astype(np.float64) + _EPS)  # same float64 expressions as pycocotools
            rc = tp / np.where(valid, npig, 1.0)[:, self._tp_cat]
            # g = number of recall thresholds reached: rc >= recThrs[r]  <=>  r < g
            g = np.searchsorted(self.rec_thrs, rc.ravel(), side="right")
            key = (np.arange(B)[:, None] * S + self._tp_seg).ravel() * (R + 1) + g
            starts = np.flatnonzero(np.diff(key, prepend=-1))  # key is sorted
            best = np.zeros(B * S * (R + 1))
            best[key[starts]] = np.maximum.reduceat(pr.ravel(), starts)
            best = best.reshape(B, T, K, R + 1)
            # precision at recall threshold r = max over true positives with g > r
            prec = np.maximum.accumulate(best[..., :0:-1], axis=-1)[..., ::-1]
        ap_tk = prec.mean(axis=-1)  # (B, T, K)
        n_valid = valid.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            def over_cats(x):  # mean over categories with ground truth
                return np.where(valid, x, 0.0).sum(axis=1) / n_valid * 100.0

            out = {"AP": over_cats(ap_tk.mean(axis=1))}
            for name, thr in (("AP50", 0.5), ("AP75", 0.75)):
                t = np.flatnonzero(self.iou_thrs == thr)  # as summarize(): exact match
                out[name] = over_cats(ap_tk[:, t[0]]) if len(t) else np.full(B, np.nan)
        return out


# ---------------------------------------------------------------------- records
def _pycocotools_records(eval_imgs, I, K, A, a):
    for k in range(K):
        base = k * A * I + a * I
        for i in range(I):
            e = eval_imgs[base + i]
            if e is None:
                continue
            yield (k, i, e["dtScores"], e["dtMatches"] != 0, e["dtIgnore"].astype(bool),
                   int(np.count_nonzero(e["gtIgnore"] == 0)))


def _faster_records(eval_imgs_cpp, I, K, A, T, a):
    # faster-coco-eval's ImageEvaluation pickles as (detection_matches (T*D, matched GT id
    # or 0), ground_truth_matches, detection_scores (D,), ground_truth_ignores (G,),
    # detection_ignores (T*D), matched pairs); same [k, a, i] layout as pycocotools.
    for k in range(K):
        base = k * A * I + a * I
        for i in range(I):
            state = eval_imgs_cpp[base + i].__getstate__()
            if len(state) != 6:
                raise ValueError("unsupported faster-coco-eval ImageEvaluation layout; "
                                 "use PerImageEval.from_coco(..., backend='pycocotools')")
            dm, _, scores, gt_ig, dt_ig, _ = state
            if not scores and not gt_ig:
                continue
            D = len(scores)
            yield (k, i, scores, np.asarray(dm, dtype=np.int64).reshape(T, D) != 0,
                   np.asarray(dt_ig, dtype=bool).reshape(T, D), len(gt_ig) - sum(gt_ig))


def load_gt(coco_gt):
    """A pycocotools COCO from a COCO object (returned as is), a dict or a json path."""
    from pycocotools.coco import COCO

    if hasattr(coco_gt, "loadRes"):
        return coco_gt
    if not isinstance(coco_gt, dict):
        with open(coco_gt) as f:
            coco_gt = json.load(f)
    gt = COCO()
    gt.dataset = coco_gt
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _load_dt(gt, coco_dt, drop_bbox=False):
    """drop_bbox: as Detectron2's COCOEvaluator does for mask AP, so that loadRes takes a
    detection's area from its mask, not its box (APs/APm/APl use that area)."""
    from pycocotools.coco import COCO

    if hasattr(coco_dt, "loadRes"):
        return coco_dt
    if not isinstance(coco_dt, list):
        with open(coco_dt) as f:
            coco_dt = json.load(f)
    if not coco_dt:  # loadRes cannot take an empty list
        dt = COCO()
        dt.dataset = {"images": list(gt.dataset["images"]), "annotations": [],
                      "categories": list(gt.dataset.get("categories", []))}
        with contextlib.redirect_stdout(io.StringIO()):
            dt.createIndex()
        return dt
    with contextlib.redirect_stdout(io.StringIO()):
        # loadRes adds area/id fields to the dicts it is given: give it copies
        return gt.loadRes([{k: v for k, v in d.items() if not (drop_bbox and k == "bbox")} for d in coco_dt])


def _make_coco_eval(gt, dt, iou_type, backend):
    from .coco_backend import BACKEND_FASTER, BACKEND_PYCOCOTOOLS, coco_eval_class

    if backend == "auto":
        cls = coco_eval_class()
    elif backend == BACKEND_FASTER:
        from faster_coco_eval import COCOeval_faster as cls
    elif backend == BACKEND_PYCOCOTOOLS:
        from pycocotools.cocoeval import COCOeval as cls
    else:
        raise ValueError(f"unknown backend {backend!r}")
    if cls.__module__.startswith("faster_coco_eval"):
        return cls(gt, dt, iou_type, separate_eval=True, print_function=lambda *a, **k: None)
    return cls(gt, dt, iou_type)


# --------------------------------------------------------------------- bootstrap
def bootstrap_weights(n_images, n_resamples=1000, seed=0):
    """(n_resamples, n_images) int32 counts: each row resamples the images with
    replacement. Same (n_images, n_resamples, seed) -> same matrix, so runs evaluated on
    the same image ids get paired resamples."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_images, size=(n_resamples, n_images))
    draws += np.arange(n_resamples)[:, None] * n_images
    counts = np.bincount(draws.ravel(), minlength=n_resamples * n_images)
    return counts.reshape(n_resamples, n_images).astype(np.int32)
