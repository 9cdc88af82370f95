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

import numpy as np

from ..evaluation.intervals import (
    LEVEL,
    POWER,
    Interval,
    SeedVariance,
    difference_design,
    difference_interval,
    seed_variance,
    setting_interval,
)
from ..run_record import FINISHED
from .aggregate import group_runs, norm_sort_key
from .convergence import loss_trend
from .samples import RunSamples

BASELINES = ("bn", "gn")
DEFAULT_LR_SCALE = 1.0
DEFAULT_EFFECT = 0.5  # AP points: the paper's claimed gain of FRN; report --effect changes it


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
    """Samples of a setting's finished runs; None unless every finished run has them, all
    on the same test images."""
    finished = [r for r in runs if r["status"] == FINISHED]
    got = [samples.get(r["source"]) for r in finished]
    if not got or any(s is None for s in got) or len({s.images for s in got}) != 1:
        return None
    return got


def _seed_data(runs: Sequence[dict], samples: Dict[str, RunSamples], metric: str):
    """(values (n,), resampled values (n, R), seeds) of a setting's finished runs, or None."""
    s = _samples_of(runs, samples)
    if s is None:
        return None
    seeds = [r.get("seed") for r in runs if r["status"] == FINISHED]
    return np.array([x.point[metric] for x in s]), np.stack([x.samples[metric] for x in s]), seeds


def sweep_seed_variance(runs: Sequence[dict], samples: Dict[str, RunSamples], metric: str = "AP") -> SeedVariance:
    """The seed variance pooled over every setting of the sweep: (norm, images per GPU,
    lr_scale) groups (the norm name carries the activation)."""
    settings = {}
    for run in runs:
        settings.setdefault((run["norm"], run["ims_per_gpu"], lr_scale_of(run)), []).append(run)
    values = {}
    for key, group in settings.items():
        data = _seed_data(group, samples, metric)
        if data is not None:
            values[key] = list(zip(data[2], data[0].tolist()))
    return seed_variance(values)


def setting_intervals(runs: Sequence[dict], samples: Dict[str, RunSamples], metric: str = "AP",
                      sv: Optional[SeedVariance] = None) -> Dict[Tuple[str, int], Interval]:
    """Interval per (norm, images per GPU); sv: the sweep's seed variance (default: from runs)."""
    sv = sweep_seed_variance(runs, samples, metric) if sv is None else sv
    out = {}
    for key, group in group_runs(runs).items():
        data = _seed_data(group.runs, samples, metric)
        if data is not None:
            out[key] = setting_interval(data[0], data[1], sv)
    return out


def differences(runs: Sequence[dict], samples: Dict[str, RunSamples], metric: str = "AP",
                sv: Optional[SeedVariance] = None, effect: float = DEFAULT_EFFECT) -> List[dict]:
    """{norm, ims_per_gpu, baseline, interval, mdd, seeds_needed} for every norm against BN
    and GN at the same images per GPU: paired by seed where both ran the same seeds, and
    always over the same resampled test images."""
    sv = sweep_seed_variance(runs, samples, metric) if sv is None else sv
    groups = group_runs(runs)
    out = []
    for (norm, ims), group in groups.items():
        for base in BASELINES:
            base_group = groups.get((base, ims))
            if norm == base or base_group is None:
                continue
            if norm in BASELINES and BASELINES.index(norm) < BASELINES.index(base):
                continue  # bn - gn is gn - bn reversed: show the baselines' difference once
            a, b = _seed_data(base_group.runs, samples, metric), _seed_data(group.runs, samples, metric)
            if a is None or b is None or not _pairable(base_group.runs, group.runs, samples):
                continue
            interval = difference_interval(a[0], a[1], b[0], b[1], sv, a[2], b[2])
            design = difference_design(interval, sv)
            out.append({"norm": norm, "ims_per_gpu": ims, "baseline": base, "interval": interval,
                        "mdd": interval.mdd if interval.training_noise else None,
                        "seeds_needed": design.seeds_needed(effect) if design else None,
                        "design": design})
    return out


def _pairable(a_runs, b_runs, samples) -> bool:
    """Both settings were scored on the same test images (same bootstrap resamples)."""
    return len({samples[r["source"]].images for r in list(a_runs) + list(b_runs) if r["status"] == FINISHED}) == 1


def convergence(runs: Sequence[dict]) -> Dict[Tuple[str, int], Optional[dict]]:
    """Loss trend over the end of the schedule per (norm, images per GPU) (convergence.py)."""
    return {key: loss_trend(g.finished) for key, g in group_runs(runs).items()}


def _mean(values: List[float]) -> Optional[float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def lr_choices(runs: Sequence[dict], samples: Dict[str, RunSamples], sv: Optional[SeedVariance] = None
               ) -> List[dict]:
    """Per (norm, images per GPU): the lr_scale chosen on the tuning split (or on test
    when no run has a tuning AP) and the test AP, with its interval, at that lr."""
    sv = sweep_seed_variance(runs, samples) if sv is None else sv
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
            data = _seed_data(per_lr[best], samples, "AP")
            row.update(lr_scale=best, AP=_mean([r.get("AP") for r in finished[best]]),
                       interval=setting_interval(data[0], data[1], sv) if data else None)
        out.append(row)
    return out


MACHINE_KEYS = ("cpu", "cores", "torch_threads", "gpu", "gpu_driver", "git_commit", "git_dirty")


def machines(runs: Sequence[dict]) -> List[dict]:
    """The distinct machine records (metrics.json "machine") with their run counts; [] for
    runs from before it was recorded."""
    seen: Dict[tuple, dict] = {}
    for run in runs:
        m = run.get("machine")
        if isinstance(m, dict):
            key = tuple(str(m.get(k)) for k in MACHINE_KEYS)
            seen.setdefault(key, {**{k: m.get(k) for k in MACHINE_KEYS}, "runs": 0})["runs"] += 1
    return list(seen.values())


METRICS_SHOWN = ("AP", "AP50", "AP75")


def sweep_results(runs: Sequence[dict], samples: Dict[str, RunSamples],
                  mask_samples: Optional[Dict[str, RunSamples]] = None, effect: float = DEFAULT_EFFECT) -> dict:
    """The answer of the sweep, computed once; tables, JSON and plots only format it.

    Keys: level, power, effect, fixed_lr_scale; seed_variance {metric: SeedVariance};
    settings {metric: {(norm, ims): Interval}}; differences {metric: [dict]} (box "AP",
    mask "mask_AP"); convergence {(norm, ims): trend or None}; best_lr; machines.
    Metrics: "AP", "AP50", "AP75" and, with mask samples, "mask_AP", ...
    """
    fixed = fixed_lr_runs(runs)
    by_prefix = [("", samples or {})] + ([("mask_", mask_samples)] if mask_samples else [])
    seed_var, settings, diffs = {}, {}, {}
    for prefix, s in by_prefix:
        for m in METRICS_SHOWN:
            sv = seed_var[prefix + m] = sweep_seed_variance(runs, s, m)
            settings[prefix + m] = setting_intervals(fixed, s, m, sv)
        diffs[prefix + "AP"] = differences(fixed, s, "AP", seed_var[prefix + "AP"], effect)
    return {"level": LEVEL, "power": POWER, "effect": effect, "fixed_lr_scale": fixed_lr(runs),
            "seed_variance": seed_var, "settings": settings, "differences": diffs,
            "convergence": convergence(fixed), "best_lr": lr_choices(runs, samples or {}, seed_var["AP"]),
            "machines": machines(runs)}


def _finite(value):
    return value if not isinstance(value, float) or math.isfinite(value) else None


def interval_dict(interval: Optional[Interval]) -> Optional[dict]:
    if interval is None:
        return None
    return {"value": interval.value, "lo": _finite(interval.lo), "hi": _finite(interval.hi), "n": interval.n,
            "se": _finite(interval.se), "df": _finite(interval.df), "model": interval.model,
            "training_noise": interval.training_noise, "excludes_zero": interval.excludes_zero,
            "significant": interval.significant}


def results_json(results: dict) -> dict:
    """sweep_results as JSON data (comparisons.json)."""
    return {
        "level": results["level"], "power": results["power"], "effect": results["effect"],
        "fixed_lr_scale": results["fixed_lr_scale"],
        "seed_variance": {m: sv.as_dict() for m, sv in results["seed_variance"].items()},
        "settings": [{"norm": n, "ims_per_gpu": i, "metric": m, **interval_dict(iv),
                      "convergence": results["convergence"].get((n, i))}
                     for m, per in results["settings"].items() for (n, i), iv in per.items()],
        "differences": [{"norm": d["norm"], "ims_per_gpu": d["ims_per_gpu"], "baseline": d["baseline"],
                         "metric": m, **interval_dict(d["interval"]), "mdd": _finite(d["mdd"]),
                         "seeds_needed": d["seeds_needed"]}
                        for m, ds in results["differences"].items() for d in ds],
        "best_lr": [{**{k: v for k, v in row.items() if k != "interval"},
                     "scores": {str(k): v for k, v in row["scores"].items()},
                     "unfinished": {str(k): v for k, v in row["unfinished"].items()},
                     "interval": interval_dict(row["interval"])} for row in results["best_lr"]],
        "machines": results["machines"],
    }


def comparisons_json(runs: Sequence[dict], samples: Dict[str, RunSamples],
                     mask_samples: Optional[Dict[str, RunSamples]] = None, effect: float = DEFAULT_EFFECT) -> dict:
    """Everything the tables show, as data (comparisons.json)."""
    return results_json(sweep_results(runs, samples, mask_samples, effect))
