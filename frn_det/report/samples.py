"""Bootstrap samples of every finished run's AP over its test images (the input of the
interval model in frn_det/evaluation/intervals.py).

Each finished run's test-set detections are re-evaluated once (COCOeval's per-image
matching, frn_det.evaluation.PerImageEval) and its AP, AP50 and AP75 re-accumulated on
N_RESAMPLES bootstrap resamples of the test images. The resamples depend only on the
number of images and BOOTSTRAP_SEED, so every run evaluated on the same images sees the
same resamples: differences between runs are paired. The samples are cached next to the
run (bootstrap_<dataset>.npz), keyed by the files they came from. Mask AP (iou_type
"segm", models that predict masks) is bootstrapped the same way from the same detections
file and cached apart (bootstrap_<dataset>_segm.npz).
"""
import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..evaluation import METRICS, PerImageEval, bootstrap_weights, load_gt
from ..utils.atomic import write_atomic
from ..utils.damaged import Damaged, describe, read_or_set_aside

log = logging.getLogger(__name__)

N_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CACHE_VERSION = 1
# The run record's AP that the re-evaluation must reproduce, per COCO iou_type.
RECORDED_AP = {"bbox": "AP", "segm": "mask_AP"}


@dataclass
class RunSamples:
    """One run's point metrics and their bootstrap samples on its test images."""

    point: Dict[str, float]
    samples: Dict[str, np.ndarray]  # metric -> (N_RESAMPLES,)
    images: str  # digest of the test image ids: only equal digests can be paired


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
    try:  # a damaged cache is set aside and rebuilt; one of other files (changed since) is rebuilt
        cached = read_or_set_aside(cache, _read_cache, "rebuilding it from the run's detections")
    except OSError as e:
        log.warning("could not read the bootstrap cache %s (%s); rebuilding it", cache, e.strerror)
        cached = None
    if cached is not None and cached[0] == key:
        return cached[1]
    if gt_cache is not None:  # one ground-truth load per json for all runs of a report
        if gt_json not in gt_cache:
            gt_cache[gt_json] = _named(gt_json, load_gt, gt_json)
        gt = gt_cache[gt_json]
    else:
        gt = gt_json
    evaluation = _named(dets, PerImageEval.from_coco, gt, dets, iou_type)
    point = evaluation.metrics()
    _check_point_matches_record(run, point, RECORDED_AP[iou_type])
    samples = evaluation.metrics_for_weights(bootstrap_weights(evaluation.n_images, N_RESAMPLES, BOOTSTRAP_SEED))
    images = hashlib.sha256(evaluation.img_ids.tobytes()).hexdigest()[:16]

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a name
            np.savez(f, key=key, images=images, **{f"point_{m}": point[m] for m in METRICS},
                     **{f"samples_{m}": np.asarray(samples[m]) for m in METRICS})

    try:
        write_atomic(cache, write)  # a kill during the write leaves the old file or none, never half
    except OSError as e:  # a read-only sweep folder still gets its report
        log.warning("could not cache bootstrap samples in %s: %s", cache, e)
    return RunSamples(point, {m: np.asarray(samples[m]) for m in METRICS}, images)


def _read_cache(path: Path):
    """(key, RunSamples) of a bootstrap cache; Damaged when it is not one this version writes."""
    with np.load(path, allow_pickle=False) as data:
        key = str(data["key"])
        if not key.startswith(f"v{CACHE_VERSION}|"):
            raise Damaged(f"written by another version ({key.split('|')[0]}, this one writes v{CACHE_VERSION})")
        samples = {m: np.asarray(data[f"samples_{m}"]) for m in METRICS}
        if any(s.shape != (N_RESAMPLES,) for s in samples.values()):
            raise Damaged(f"samples of another shape than ({N_RESAMPLES},)")
        point = {m: float(data[f"point_{m}"]) for m in METRICS}
        return key, RunSamples(point, samples, str(data["images"]))


def _named(path: str, load, *args):
    """load(*args), its failure to read `path` (a json that does not parse) naming the file."""
    try:
        return load(*args)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ValueError(f"{path} cannot be read ({describe(e)})") from e


def _check_point_matches_record(run: dict, point: Dict[str, float], key: str = "AP") -> None:
    """The re-evaluated AP must be the AP the run recorded: else the files changed since."""
    recorded = run.get(key)
    if recorded is not None and math.isfinite(point["AP"]) and abs(point["AP"] - recorded) > 1e-6:
        name = key.replace("_", " ")  # "AP", "mask AP"
        raise ValueError(
            f"{run['source']}: re-evaluating its detections gives {name} {point['AP']:.4f}, but the run recorded "
            f"{recorded:.4f}; the detections or ground-truth files changed after the run"
        )


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
