"""The answer of a sweep: intervals per setting, differences to BN and GN with family-wise
stars, power, and the best learning rate per norm (pure functions of the runs and their
bootstrap samples; docs/intervals.md).

Learning-rate protocol: runs that differ only in lr_scale form one (norm, images per
GPU) setting. The lr with the best mean AP on the tuning split is chosen and its AP on
the test split is reported. Without a tuning split the choice is made on the test split
itself, which is optimistic, and the report says so. The choice is on box AP also for
models that predict masks.

Families: every difference of one metric's table is tested together. Comparisons the sweep
declared primary (`primary`, default DEFAULT_PRIMARY: the default grid's question) form
their own family and carry the stars; the rest is an exploratory family, marked apart.
Without a primary comparison in the table, the whole table is one family.

Mask AP has its own samples (bootstrapped from the same detections, iou_type "segm"):
the same functions given those samples give mask AP intervals and differences.
"""
import math
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..evaluation.intervals import (
    LEVEL,
    MODERATED,
    OWN,
    Interval,
    one_seed_difference,
    paired_difference,
    run_image_variance,
    setting_interval,
    unpaired_difference,
)
from ..evaluation.moderation import SeedNoise, Unit, paired_setting_variances, seed_noise, shared_seeds
from ..evaluation.multiplicity import min_p
from ..evaluation.power import POWER, Design, SeedTerm, mdd
from ..record.metrics import FINISHED
from .aggregate import group_runs, norm_sort_key
from .convergence import loss_trend
from .samples import RunSamples

BASELINES = ("bn", "gn")
DEFAULT_LR_SCALE = 1.0
DEFAULT_EFFECT = 0.5  # AP points: the paper's claimed gain of FRN; report --effect changes it
DEFAULT_PRIMARY = ("frn-bn", "frn-gn")  # the default grid's question; sweep key / report --primary
PRIMARY, EXPLORATORY, ALL = "primary", "exploratory", "all"  # a comparison's family


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


def setting_key(run: dict) -> Tuple[str, int, float]:
    """A setting of the noise model: (norm with its activation, images per GPU, lr_scale)."""
    return run["norm"], run["ims_per_gpu"], lr_scale_of(run)


def parse_comparison(text: str) -> Tuple[str, str]:
    """"frn-gn" -> ("frn", "gn"): a norm against a baseline the report compares with."""
    norm, sep, base = str(text).strip().lower().rpartition("-")
    if not sep or not norm or base not in BASELINES:
        raise ValueError(f"primary comparison {text!r}: expected <norm>-<baseline> with a baseline in "
                         f"{', '.join(BASELINES)} (e.g. frn-gn)")
    return norm, base


# ------------------------------------------------------------------ a setting's data
@dataclass(frozen=True)
class SettingData:
    """A setting's finished runs with samples, on one set of test images."""

    values: np.ndarray  # (n,) the seeds' metric
    boot: np.ndarray  # (n, R) their resampled metric
    seeds: List
    sources: List[str]
    images: str

    def by_seed(self) -> Dict:
        return dict(zip(self.seeds, range(len(self.seeds))))


def setting_data(runs: Sequence[dict], samples: Dict[str, RunSamples], metric: str) -> Optional[SettingData]:
    """None unless every finished run has samples, all on the same test images."""
    finished = [r for r in runs if r["status"] == FINISHED]
    got = [samples.get(r["source"]) for r in finished]
    if not got or any(s is None for s in got) or len({s.images for s in got}) != 1:
        return None
    return SettingData(np.array([s.point[metric] for s in got]), np.stack([s.samples[metric] for s in got]),
                       [r.get("seed") for r in finished], [r["source"] for r in finished], got[0].images)


def sweep_data(runs: Sequence[dict], samples: Dict[str, RunSamples], metric: str
               ) -> Dict[Tuple[str, int, float], SettingData]:
    by_setting: Dict[Tuple[str, int, float], List[dict]] = {}
    for run in runs:
        by_setting.setdefault(setting_key(run), []).append(run)
    out = {}
    for key, group in by_setting.items():
        data = setting_data(group, samples, metric)
        if data is not None:
            out[key] = data
    return out


def sweep_noise(runs: Sequence[dict], samples: Dict[str, RunSamples], metric: str = "AP") -> SeedNoise:
    """The seed variances of every setting and pair of the sweep (moderation.py)."""
    return seed_noise({k: list(zip(d.seeds, d.values.tolist())) for k, d in sweep_data(runs, samples, metric).items()})


# ---------------------------------------------------------------------- settings
def _setting(data: SettingData, unit: Optional[Unit]) -> Interval:
    if unit is None:  # one seed: images only
        return setting_interval(data.values, data.boot, 0.0, math.inf, OWN)
    return setting_interval(data.values, data.boot, unit.variance, unit.df, unit.model)


def setting_intervals(runs: Sequence[dict], samples: Dict[str, RunSamples], metric: str = "AP",
                      noise: Optional[SeedNoise] = None) -> Dict[Tuple[str, int], Interval]:
    """Interval per (norm, images per GPU) of `runs` (one lr_scale); noise: the sweep's
    (default: from these runs)."""
    noise = sweep_noise(runs, samples, metric) if noise is None else noise
    data = sweep_data(runs, samples, metric)
    out = {}
    for key, group in group_runs(runs).items():
        key3 = setting_key(group.runs[0])
        if key3 in data:
            out[key] = _setting(data[key3], noise.setting(key3))
    return out


# ------------------------------------------------------------------- differences
@dataclass(frozen=True)
class Difference:
    """One difference b - a before any family: its interval and what its covariance needs."""

    interval: Interval
    terms: Tuple[SeedTerm, ...]  # its seed variance, for power and planning
    used: Dict[Tuple, Tuple[List[str], float]]  # setting -> (runs used, sign in b - a)
    boot: np.ndarray  # (R,) resampled value of the difference
    untestable: str = ""  # why it gets no star whatever its value ("" when testable)
    image_share: float = math.nan  # paired: C / V, the share of one seed's image noise the seeds share


def _rows(data: SettingData, seeds: Sequence) -> List[int]:
    index = data.by_seed()
    return [index[s] for s in seeds]


def difference(a_key, a: SettingData, b_key, b: SettingData, noise: SeedNoise) -> Difference:
    """b - a: paired on the seeds both finished (two or more), else unpaired (Welch); one
    seed on a side: images only."""
    seeds = shared_seeds(dict(zip(a.seeds, a.values)), dict(zip(b.seeds, b.values)))
    pair = noise.pair(a_key, b_key) if len(seeds) > 1 else None
    if pair is not None:
        ia, ib = _rows(a, seeds), _rows(b, seeds)
        interval = paired_difference(a.values[ia], a.boot[ia], b.values[ib], b.boot[ib], pair.variance, pair.df,
                                     pair.model)
        used = {a_key: ([a.sources[i] for i in ia], -1.0), b_key: ([b.sources[i] for i in ib], 1.0)}
        terms = (_term(pair, noise.pair_prior, noise.pair_cap),)
        boot = b.boot[ib].mean(axis=0) - a.boot[ia].mean(axis=0)
        zero = pair.zero or any(u is not None and u.zero for u in (noise.setting(a_key), noise.setting(b_key)))
        untestable = "zero seed variance" if zero else ""
        V, C = run_image_variance(b.boot[ib] - a.boot[ia])
        share = C / V if V > 0 else math.nan
    else:
        share = math.nan
        used = {a_key: (list(a.sources), -1.0), b_key: (list(b.sources), 1.0)}
        boot = b.boot.mean(axis=0) - a.boot.mean(axis=0)
        ua, ub = noise.setting(a_key), noise.setting(b_key)
        if ua is None or ub is None:
            value = float(b.values.mean() - a.values.mean())
            return Difference(one_seed_difference(value, boot, min(len(a.values), len(b.values))), (), used, boot,
                              "one seed")
        model = MODERATED if MODERATED == ua.model == ub.model else OWN
        interval = unpaired_difference(a.values, a.boot, b.values, b.boot, (ua.variance, ua.df),
                                       (ub.variance, ub.df), model)
        terms = (_term(ua, noise.setting_prior, noise.setting_cap), _term(ub, noise.setting_prior, noise.setting_cap))
        untestable = "zero seed variance" if ua.zero or ub.zero else ""
    return Difference(interval, terms, used, boot, untestable, share)


def _term(unit: Unit, prior, cap: int) -> SeedTerm:
    """The unit's variance as a seed term whose df at its own n is the unit's df."""
    if unit.model != MODERATED or prior is None:
        return SeedTerm(unit.variance, 0.0)
    return SeedTerm(unit.variance, prior.df, max(cap, unit.own_df) / unit.own_df)


def _covariance(diffs: Sequence[Difference], setting_var: Dict, fallback: Dict) -> np.ndarray:
    """The model covariance of the differences: the seed part from each setting's variance
    (runs two differences share), the image part from their bootstrap correlation."""
    k = len(diffs)
    cov = np.zeros((k, k))
    for i, di in enumerate(diffs):
        for j in range(i, k):
            dj = diffs[j]
            seed = 0.0
            for setting, (runs_i, sign_i) in di.used.items():
                if setting in dj.used:
                    runs_j, sign_j = dj.used[setting]
                    common = len(set(runs_i) & set(runs_j))
                    var = setting_var.get(setting, fallback.get(setting, 0.0))
                    seed += sign_i * sign_j * var * common / (len(runs_i) * len(runs_j))
            cov[i, j] = cov[j, i] = seed
    boots = np.stack([d.boot for d in diffs])
    finite = np.all(np.isfinite(boots), axis=0)
    image_sd = np.sqrt([max(d.interval.image_var, 0.0) for d in diffs])
    if finite.sum() > 2:
        corr = np.nan_to_num(np.corrcoef(boots[:, finite]))
        cov += corr * np.outer(image_sd, image_sd)
    else:
        cov += np.diag(image_sd ** 2)
    return cov


def _family_of(norm: str, base: str, primary: Sequence[Tuple[str, str]], has_primary: bool) -> str:
    if not has_primary:
        return ALL
    return PRIMARY if (norm, base) in primary else EXPLORATORY


def differences(runs: Sequence[dict], samples: Dict[str, RunSamples], metric: str = "AP",
                noise: Optional[SeedNoise] = None, effect: float = DEFAULT_EFFECT,
                primary: Sequence[str] = DEFAULT_PRIMARY) -> List[dict]:
    """Every norm against BN and GN at the same images per GPU (runs: one lr_scale), each
    with its interval, family, simultaneous interval, star, power and seeds needed; noise:
    the sweep's (default: from these runs).

    Keys: norm, ims_per_gpu, baseline, declared (a primary comparison), interval (alone), adjusted (simultaneous in its
    family), family, p, p_adjusted, starred (a conclusion of its family: primary or all),
    signal (exploratory, passes its own family), untestable (why never starred), mdd,
    seeds_needed, design, lost ({setting: (finished, runs)} where a setting lost runs).
    """
    noise = sweep_noise(runs, samples, metric) if noise is None else noise
    data = sweep_data(runs, samples, metric)
    groups = group_runs(runs)
    wanted = [parse_comparison(c) for c in primary]
    found = []
    for (norm, ims), group in groups.items():
        for base in BASELINES:
            base_group = groups.get((base, ims))
            if norm == base or base_group is None:
                continue
            if norm in BASELINES and BASELINES.index(norm) < BASELINES.index(base):
                continue  # bn - gn is gn - bn reversed: show the baselines' difference once
            a_key, b_key = setting_key(base_group.runs[0]), setting_key(group.runs[0])
            if a_key not in data or b_key not in data or data[a_key].images != data[b_key].images:
                continue  # no samples, or not scored on the same test images
            lost = {f"{g.norm}@{g.ims_per_gpu}": (len(g.finished), len(g.runs))
                    for g in (base_group, group) if len(g.finished) < len(g.runs)}
            found.append(((norm, ims, base), difference(a_key, data[a_key], b_key, data[b_key], noise), lost))
    has_primary = any((n, b) in wanted for (n, _, b), _, _ in found)
    out = []
    testable = {}
    for (norm, ims, base), diff, lost in found:
        family = _family_of(norm, base, wanted, has_primary) if diff.interval.training_noise else None
        if family is not None and not diff.untestable:
            testable.setdefault(family, []).append(len(out))
        out.append({"norm": norm, "ims_per_gpu": ims, "baseline": base, "declared": (norm, base) in wanted,
                    "interval": diff.interval,
                    "adjusted": None, "family": family, "p": diff.interval.p if family else None,
                    "p_adjusted": None, "starred": False, "signal": False, "untestable": diff.untestable,
                    "mdd": None, "seeds_needed": None, "design": None, "lost": lost, "_diff": diff})
    setting_var = paired_setting_variances(noise)
    fallback = {k: u.variance for k, u in noise.settings.items()}
    for family, members in testable.items():
        diffs = [out[i]["_diff"] for i in members]
        cov = _covariance(diffs, setting_var, fallback)
        test = min_p([d.interval.t for d in diffs], [d.interval.df for d in diffs], cov)
        for i, critical, p_adj in zip(members, test.critical, test.p_adjusted):
            row = out[i]
            iv = row["interval"]
            adjusted = iv.widened(critical)
            found_it = adjusted.excludes_zero
            row.update(adjusted=adjusted, p_adjusted=float(p_adj), starred=found_it and family != EXPLORATORY,
                       signal=found_it and family == EXPLORATORY, mdd=mdd(iv.se, iv.df, critical),
                       design=Design(row["_diff"].terms, iv.image_var, test.alpha))
    _plan_one_seed(out, noise)
    for row in out:
        diff = row.pop("_diff")
        if row["design"] is None and row["family"] is not None and diff.terms:  # untestable: plan at 5% alone
            row["design"] = Design(diff.terms, row["interval"].image_var, 1 - LEVEL)
        row["seeds_needed"] = row["design"].seeds_needed(effect) if row["design"] else None
    return out


def _plan_one_seed(rows: List[dict], noise: SeedNoise) -> None:
    """A one-seed comparison plans with the sweep's pair prior; its image term is its
    bootstrap variance times the share the seeds share in the sweep's other comparisons."""
    prior = noise.pair_prior
    if prior is None:
        return
    shares = [row["_diff"].image_share for row in rows if math.isfinite(row["_diff"].image_share)]
    share = float(np.median(shares)) if shares else 1.0  # none known: all of it (conservative)
    for row in rows:
        if row["interval"].training_noise:
            continue
        image = row["interval"].image_var * share
        cap_rate = max(1, noise.pair_settings - 1)
        row["design"] = Design((SeedTerm(prior.scale, prior.df, cap_rate),), image, 1 - LEVEL)


def convergence(runs: Sequence[dict]) -> Dict[Tuple[str, int], Optional[dict]]:
    """Loss trend over the end of the schedule per (norm, images per GPU) (convergence.py)."""
    return {key: loss_trend(g.finished) for key, g in group_runs(runs).items()}


def _mean(values: List[float]) -> Optional[float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def lr_choices(runs: Sequence[dict], samples: Dict[str, RunSamples], noise: Optional[SeedNoise] = None
               ) -> List[dict]:
    """Per (norm, images per GPU): the lr_scale chosen on the tuning split (or on test
    when no run has a tuning AP) and the test AP, with its interval, at that lr."""
    noise = sweep_noise(runs, samples) if noise is None else noise
    data = sweep_data(runs, samples, "AP")
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
            key3 = (norm, ims, best)
            row.update(lr_scale=best, AP=_mean([r.get("AP") for r in finished[best]]),
                       interval=_setting(data[key3], noise.setting(key3)) if key3 in data else None)
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
                  mask_samples: Optional[Dict[str, RunSamples]] = None, effect: float = DEFAULT_EFFECT,
                  primary: Sequence[str] = DEFAULT_PRIMARY) -> dict:
    """The answer of the sweep, computed once; tables, JSON and plots only format it.

    Keys: level, power, effect, primary, fixed_lr_scale; noise {metric: SeedNoise};
    settings {metric: {(norm, ims): Interval}}; differences {metric: [dict]} (box "AP",
    mask "mask_AP"); convergence {(norm, ims): trend or None}; best_lr; machines.
    Metrics: "AP", "AP50", "AP75" and, with mask samples, "mask_AP", ...
    """
    fixed = fixed_lr_runs(runs)
    by_prefix = [("", samples or {})] + ([("mask_", mask_samples)] if mask_samples else [])
    noise, settings, diffs = {}, {}, {}
    for prefix, s in by_prefix:
        for m in METRICS_SHOWN:
            noise[prefix + m] = sweep_noise(runs, s, m)  # all lr_scales: the training noise of every setting
            settings[prefix + m] = setting_intervals(fixed, s, m, noise[prefix + m])
        diffs[prefix + "AP"] = differences(fixed, s, "AP", noise[prefix + "AP"], effect, primary)
    return {"level": LEVEL, "power": POWER, "effect": effect, "primary": list(primary),
            "fixed_lr_scale": fixed_lr(runs), "noise": noise, "settings": settings, "differences": diffs,
            "convergence": convergence(fixed), "best_lr": lr_choices(runs, samples or {}, noise["AP"]),
            "machines": machines(runs)}


def _finite(value):
    return value if not isinstance(value, float) or math.isfinite(value) else None


def interval_dict(interval: Optional[Interval]) -> Optional[dict]:
    if interval is None:
        return None
    return {"value": interval.value, "lo": _finite(interval.lo), "hi": _finite(interval.hi), "n": interval.n,
            "se": _finite(interval.se), "df": _finite(interval.df), "model": interval.model,
            "training_noise": interval.training_noise, "excludes_zero": interval.excludes_zero}


def difference_dict(d: dict) -> dict:
    """A difference as JSON: lo/hi are the simultaneous interval that goes with the star
    (the interval alone where no family tested it), *_unadjusted the interval alone."""
    shown = d["adjusted"] or d["interval"]
    return {"norm": d["norm"], "ims_per_gpu": d["ims_per_gpu"], "baseline": d["baseline"],
            **interval_dict(shown), "lo_unadjusted": _finite(d["interval"].lo),
            "hi_unadjusted": _finite(d["interval"].hi), "family": d["family"], "p": _finite(d["p"]),
            "p_adjusted": _finite(d["p_adjusted"]), "significant": d["starred"], "exploratory_signal": d["signal"],
            "untestable": d["untestable"] or None, "lost_runs": {k: {"finished": f, "runs": n}
                                                                 for k, (f, n) in d["lost"].items()},
            "mdd": _finite(d["mdd"]), "seeds_needed": d["seeds_needed"]}


def results_json(results: dict) -> dict:
    """sweep_results as JSON data (comparisons.json)."""
    return {
        "level": results["level"], "power": results["power"], "effect": results["effect"],
        "primary": results["primary"], "fixed_lr_scale": results["fixed_lr_scale"],
        "noise": {m: n.as_dict() for m, n in results["noise"].items()},
        "settings": [{"norm": n, "ims_per_gpu": i, "metric": m, **interval_dict(iv),
                      "convergence": results["convergence"].get((n, i))}
                     for m, per in results["settings"].items() for (n, i), iv in per.items()],
        "differences": [{**difference_dict(d), "metric": m} for m, ds in results["differences"].items() for d in ds],
        "best_lr": [{**{k: v for k, v in row.items() if k != "interval"},
                     "scores": {str(k): v for k, v in row["scores"].items()},
                     "unfinished": {str(k): v for k, v in row["unfinished"].items()},
                     "interval": interval_dict(row["interval"])} for row in results["best_lr"]],
        "machines": results["machines"],
    }
