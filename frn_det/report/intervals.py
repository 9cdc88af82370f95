"""Confidence intervals for the report: every AP and every difference between norms.

Each finished run's test-set detections are re-evaluated once (COCOeval's per-image
matching, frn_det.evaluation.PerImageEval) and its AP, AP50 and AP75 re-accumulated on
N_RESAMPLES bootstrap resamples of the test images. The resamples depend only on the
number of images and BOOTSTRAP_SEED, so every run evaluated on the same images sees the
same resamples: differences between runs are paired. The samples are cached next to the
run (bootstrap_<dataset>.npz), keyed by the files they came from. Mask AP (iou_type
"segm", models that predict masks) is bootstrapped the same way from the same detections
file and cached apart (bootstrap_<dataset>_segm.npz).

How an interval is made (quoted in the README):
- one seed, one setting: AP +- 1.96 x the bootstrap standard error. Not the percentile
  interval: COCO AP is biased upwards under resampling (interpolated precision is a
  running max), so resampled APs sit above the point estimate and a percentile interval
  can miss it entirely;
- one seed each, a difference of two settings: the 2.5-97.5 percentile interval of the
  paired resampled differences (the bias cancels in a difference);
- n >= 2 seeds: the seed mean m, with SE^2 = s_seed^2 / n + var_img, where var_img is the
  bootstrap variance of the seed-mean AP (images resampled jointly for all seeds), and
  m +- t(df) x SE with Welch-Satterthwaite's df (the image term counted as exact), so
  that a few seeds widen the interval only as much as their share of the variance.
  A difference adds the two settings' seed terms and var_img of the paired difference.
"""
import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..evaluation import METRICS, PerImageEval, bootstrap_weights, t_quantile
from ..evaluation.bootstrap import load_gt, percentiles

log = logging.getLogger(__name__)

N_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
CACHE_VERSION = 1
# The run record's AP that the re-evaluation must reproduce, per COCO iou_type.
RECORDED_AP = {"bbox": "AP", "segm": "mask_AP"}


@dataclass
class RunSamples:
    """One run's point metrics and their bootstrap samples on its test images."""

    point: Dict[str, float]
    samples: Dict[str, np.ndarray]  # metric -> (N_RESAMPLES,)
    images: str  # digest of the test image ids: only equal digests can be paired


@dataclass(frozen=True)
class Interval:
    value: float
    lo: float
    hi: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


def _file_key(path: str) -> str:
    st = os.stat(path)
    return f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"


def test_files(run: dict):
    """(dataset, gt_json, detections) of the run's test split, or None when not recorded."""
    dataset = run.get("test_dataset")
    entry = (run.get("evaluation") or {}).get(dataset) or {}
    gt, dets = entry.get("gt_json"), entry.get("detections")
    if not (gt and dets and os.path.isfile(gt) and os.path.isfile(dets)):
        return None
    return dataset, gt, dets


def cache_path(run: dict, dataset: str, iou_type: str = "bbox") -> Path:
    """bootstrap_<dataset>.npz for box AP (the name older reports cached under),
    bootstrap_<dataset>_segm.npz for mask AP."""
    suffix = "" if iou_type == "bbox" else f"_{iou_type}"
    return Path(run["source"]).parent / f"bootstrap_{dataset}{suffix}.npz"


def run_samples(run: dict, gt_cache: Optional[dict] = None, iou_type: str = "bbox") -> Optional[RunSamples]:
    """Bootstrap samples of a finished run's box AP (iou_type "segm": mask AP), cached next
    to it; None without its files, or for "segm" when the run recorded no mask AP."""
    files = test_files(run) if run.get("status") == "finished" else None
    if files is None:
        return None
    if iou_type != "bbox" and run.get(RECORDED_AP[iou_type]) is None:
        # A box-only run's detections have no masks: loadRes would make masks of its boxes.
        return None
    dataset, gt_json, dets = files
    key = f"v{CACHE_VERSION}|{_file_key(gt_json)}|{_file_key(dets)}|{N_RESAMPLES}|{BOOTSTRAP_SEED}"
    cache = cache_path(run, dataset, iou_type)
    if cache.is_file():
        try:
            with np.load(cache) as data:
                if str(data["key"]) == key:
                    return RunSamples({m: float(data[f"point_{m}"]) for m in METRICS},
                                      {m: data[f"samples_{m}"] for m in METRICS}, str(data["images"]))
        except (OSError, ValueError, KeyError) as e:
            log.warning("ignoring unreadable bootstrap cache %s: %s", cache, e)
    if gt_cache is not None:  # one ground-truth load per json for all runs of a report
        if gt_json not in gt_cache:
            gt_cache[gt_json] = load_gt(gt_json)
        gt = gt_cache[gt_json]
    else:
        gt = gt_json
    evaluation = PerImageEval.from_coco(gt, dets, iou_type)
    point = evaluation.metrics()
    _check_point_matches_record(run, point, RECORDED_AP[iou_type])
    samples = evaluation.metrics_for_weights(bootstrap_weights(evaluation.n_images, N_RESAMPLES, BOOTSTRAP_SEED))
    images = hashlib.sha256(evaluation.img_ids.tobytes()).hexdigest()[:16]
    try:
        np.savez(cache, key=key, images=images, **{f"point_{m}": point[m] for m in METRICS},
                 **{f"samples_{m}": np.asarray(samples[m]) for m in METRICS})
    except OSError as e:  # a read-only sweep folder still gets its report
        log.warning("could not cache bootstrap samples in %s: %s", cache, e)
    return RunSamples(point, {m: np.asarray(samples[m]) for m in METRICS}, images)


def _check_point_matches_record(run: dict, point: Dict[str, float], key: str = "AP") -> None:
    """The re-evaluated AP must be the AP the run recorded: else the files changed since."""
    recorded = run.get(key)
    if recorded is not None and math.isfinite(point["AP"]) and abs(point["AP"] - recorded) > 1e-6:
        name = key.replace("_", " ")  # "AP", "mask AP"
        raise ValueError(
            f"{run['source']}: re-evaluating its detections gives {name} {point['AP']:.4f}, but the run recorded "
            f"{recorded:.4f}; the detections or ground-truth files changed after the run"
        )


def _percentile_interval(value: float, samples: np.ndarray, n: int) -> Interval:
    lo, hi, _ = percentiles(samples, LEVEL)
    return Interval(value, lo, hi, n)


def _z() -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + LEVEL / 2)


def _combined_interval(value: float, seed_terms: Sequence[Tuple[float, int]], var_img: float, n: int) -> Interval:
    """value +- q x sqrt(sum of seed variances of the mean + var_img); q from Student's t
    with Welch-Satterthwaite's df over the seed terms (var_s2/n, n), normal without them."""
    seed_var = sum(v for v, _ in seed_terms)
    se = math.sqrt(seed_var + var_img)
    if not math.isfinite(se):
        return Interval(value, math.nan, math.nan, n)
    denominator = sum(v * v / (k - 1) for v, k in seed_terms if k > 1 and v > 0)
    if denominator == 0:
        q = _z()
    else:
        df = (seed_var + var_img) ** 2 / denominator
        q = t_quantile(LEVEL, max(1, int(df))) if df < 1e6 else _z()  # int: the conservative side
    return Interval(value, value - q * se, value + q * se, n)


def _pairable(runs: Sequence[RunSamples]) -> bool:
    return len({r.images for r in runs}) == 1


def _var(samples: np.ndarray) -> float:
    finite = samples[np.isfinite(samples)]
    return float(np.var(finite, ddof=1)) if len(finite) > 1 else math.nan


def setting_interval(runs: Sequence[RunSamples], metric: str = "AP") -> Optional[Interval]:
    """Interval of a setting's seed-mean metric (see the module docstring)."""
    if not runs or not _pairable(runs):
        return None
    values = np.array([r.point[metric] for r in runs])
    boot_mean = np.mean([r.samples[metric] for r in runs], axis=0)
    n = len(runs)
    seed_terms = [(float(values.var(ddof=1)) / n, n)] if n > 1 else []
    return _combined_interval(float(values.mean()), seed_terms, _var(boot_mean), n)


def difference_interval(a: Sequence[RunSamples], b: Sequence[RunSamples], metric: str = "AP") -> Optional[Interval]:
    """Interval of mean(b) - mean(a), paired over the resampled images."""
    if not a or not b or not _pairable(list(a) + list(b)):
        return None
    va = np.array([r.point[metric] for r in a])
    vb = np.array([r.point[metric] for r in b])
    boot = np.mean([r.samples[metric] for r in b], axis=0) - np.mean([r.samples[metric] for r in a], axis=0)
    diff = float(vb.mean() - va.mean())
    if len(a) == 1 and len(b) == 1:
        return _percentile_interval(diff, boot, 1)
    seed_terms = [(float(v.var(ddof=1)) / len(v), len(v)) for v in (va, vb) if len(v) > 1]
    return _combined_interval(diff, seed_terms, _var(boot), min(len(a), len(b)))


def attach_samples(runs: List[dict], iou_type: str = "bbox") -> Dict[str, RunSamples]:
    """Samples per run source path for every finished run whose files are there (box AP;
    iou_type "segm": mask AP, for the runs that recorded one)."""
    out, gt_cache = {}, {}
    finished = [r for r in runs if r.get("status") == "finished"]
    what = "" if iou_type == "bbox" else f" ({iou_type})"
    for i, run in enumerate(finished):
        try:
            samples = run_samples(run, gt_cache, iou_type)
        except (OSError, ValueError) as e:
            log.warning("no interval%s for %s: %s", what, run.get("run"), e)
            continue
        if samples is not None:
            out[run["source"]] = samples
        if len(finished) > 3:
            log.info("bootstrap%s: %d/%d runs", what, i + 1, len(finished))
    return out
