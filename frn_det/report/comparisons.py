"""The answer of a sweep: intervals per setting, paired differences to BN and GN, and the
best learning rate per norm (pure functions of the runs and their bootstrap samples).

Learning-rate protocol: runs that differ only in lr_scale form one (norm, images per
GPU) setting. The lr with the best mean AP on the tuning split is chosen and its AP on
the test split is reported. Without a tuning split the choice is made on the test split
itself, which is optimistic, and the report says so. The choice is on box AP also for
models that predict masks.

Mask AP has its own samples (bootstrapped from the same detections, iou_type "segm"):
the same functions given those samples give mask AP intervals and differences.
"""
import math
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

from .aggregate import FINISHED, group_runs, norm_sort_key
from .intervals import Interval, RunSamples, difference_interval, setting_interval

BASELINES = ("bn", "gn")
DEFAULT_LR_SCALE = 1.0


def lr_scale_of(run: dict) -> float:
    value = run.get("lr_scale")
    return DEFAULT_LR_SCALE if value is None else float(value)


def fixed_lr(runs: Sequence[dict]) -> float:
    """The lr_scale of the fixed-lr view: 1 when it was run, else the most common one."""
    scales = Counter(lr_scale_of(r) for r in runs)
    return DEFAULT_LR_SCALE if DEFAULT_LR_SCALE in scales or not scales else scales.most_common(1)[0][0]


def fixed_lr_runs(runs: Sequence[dict]) -> List[dict]:
    scale = fixed_lr(runs)
    return [r for r in runs if lr_scale_of(r) == scale]


def _samples_of(runs: Sequence[dict], samples: Dict[str, RunSamples]) -> Optional[List[RunSamples]]:
    """Samples of a setting's finished runs; None unless every finished run has them."""
    finished = [r for r in runs if r["status"] == FINISHED]
    got = [samples.get(r["source"]) for r in finished]
    return got if got and all(s is not None for s in got) else None


def setting_intervals(runs: Sequence[dict], samples: Dict[str, RunSamples], metric: str = "AP"
                      ) -> Dict[Tuple[str, int], Interval]:
    out = {}
    for key, group in group_runs(runs).items():
        s = _samples_of(group.runs, samples)
        interval = setting_interval(s, metric) if s else None
        if interval is not None:
            out[key] = interval
    return out


def differences(runs: Sequence[dict], samples: Dict[str, RunSamples], metric: str = "AP") -> List[dict]:
    """{norm, ims_per_gpu, baseline, interval} for every norm against BN and GN at the same
    images per GPU, paired over the resampled test images."""
    groups = group_runs(runs)
    out = []
    for (norm, ims), group in groups.items():
        for base in BASELINES:
            base_group = groups.get((base, ims))
            if norm == base or base_group is None:
                continue
            if norm in BASELINES and BASELINES.index(norm) < BASELINES.index(base):
                continue  # bn - gn is gn - bn reversed: show the baselines' difference once
            a, b = _samples_of(base_group.runs, samples), _samples_of(group.runs, samples)
            interval = difference_interval(a, b, metric) if a and b else None
            if interval is not None:
                out.append({"norm": norm, "ims_per_gpu": ims, "baseline": base, "interval": interval})
    return out


def _mean(values: List[float]) -> Optional[float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def lr_choices(runs: Sequence[dict], samples: Dict[str, RunSamples]) -> List[dict]:
    """Per (norm, images per GPU): the lr_scale chosen on the tuning split (or on test
    when no run has a tuning AP) and the test AP, with its interval, at that lr."""
    by_setting: Dict[Tuple[str, int], Dict[float, List[dict]]] = {}
    for run in runs:
        by_setting.setdefault((run["norm"], run["ims_per_gpu"]), {}).setdefault(lr_scale_of(run), []).append(run)
    out = []
    for (norm, ims), per_lr in sorted(by_setting.items(), key=lambda kv: (norm_sort_key(kv[0][0]), kv[0][1])):
        finished = {lr: [r for r in rs if r["status"] == FINISHED] for lr, rs in per_lr.items()}
        tune = {lr: _mean([(r.get("tune") or {}).get("AP") for r in rs]) for lr, rs in finished.items()}
        chosen_on = "tune" if any(v is not None for v in tune.values()) else "test"
        score = tune if chosen_on == "tune" else {lr: _mean([r.get("AP") for r in rs]) for lr, rs in finished.items()}
        candidates = {lr: v for lr, v in score.items() if v is not None}
        row = {"norm": norm, "ims_per_gpu": ims, "lr_scales": sorted(per_lr), "chosen_on": chosen_on,
               "scores": {lr: score.get(lr) for lr in sorted(per_lr)}, "lr_scale": None, "AP": None, "interval": None,
               "unfinished": {lr: len(per_lr[lr]) - len(finished[lr]) for lr in sorted(per_lr)}}
        if candidates:
            best = max(candidates, key=lambda lr: (candidates[lr], -abs(math.log(lr))))
            s = _samples_of(per_lr[best], samples)
            row.update(lr_scale=best, AP=_mean([r.get("AP") for r in finished[best]]),
                       interval=setting_interval(s) if s else None)
        out.append(row)
    return out


def interval_dict(interval: Optional[Interval]) -> Optional[dict]:
    if interval is None:
        return None
    return {"value": interval.value, "lo": interval.lo, "hi": interval.hi, "n": interval.n,
            "excludes_zero": interval.excludes_zero}


def comparisons_json(runs: Sequence[dict], samples: Dict[str, RunSamples],
                     mask_samples: Optional[Dict[str, RunSamples]] = None) -> dict:
    """Everything the tables show, as data (comparisons.json). Mask AP entries (metric
    "mask_AP", "mask_AP50", ...) follow the box AP ones when mask samples are given."""
    fixed = fixed_lr_runs(runs)
    by_prefix = [("", samples)] + ([("mask_", mask_samples)] if mask_samples else [])
    return {
        "level": 0.95,
        "fixed_lr_scale": fixed_lr(runs),
        "settings": [{"norm": n, "ims_per_gpu": i, "metric": prefix + m, **interval_dict(iv)}
                     for prefix, s in by_prefix for m in ("AP", "AP50", "AP75")
                     for (n, i), iv in setting_intervals(fixed, s, m).items()],
        "differences": [{"norm": d["norm"], "ims_per_gpu": d["ims_per_gpu"], "baseline": d["baseline"],
                         "metric": prefix + "AP", **interval_dict(d["interval"])}
                        for prefix, s in by_prefix for d in differences(fixed, s)],
        "best_lr": [{**{k: v for k, v in row.items() if k != "interval"},
                     "scores": {str(k): v for k, v in row["scores"].items()},
                     "unfinished": {str(k): v for k, v in row["unfinished"].items()},
                     "interval": interval_dict(row["interval"])} for row in lr_choices(runs, samples)],
    }
