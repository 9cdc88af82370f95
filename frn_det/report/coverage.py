"""The report's intervals and stars against known truth, by simulation
(tests/report/test_interval_coverage.py and tools/benchmark_coverage.py; docs/intervals.md).

A synthetic sweep: norms x images-per-GPU settings x n seeds x I test images. The score of
image i in run (setting g, seed s), whose mean over the images is the run's AP, is

    mu_g + seed_effect_s + train_gs + difficulty_i + image_gi + run_image_gsi

seed_effect: shared by all settings of a seed (same data order); train: the training
noise of one run (normal, t(5), or 5% contaminated); difficulty: shared by every run;
image: how setting g does on image i (what makes the test set's verdict differ from the
population's); run_image: one run's own per-image noise. Every run is bootstrapped on the
same resamples of the images, and the report's own code (comparisons.sweep_noise,
setting_intervals, differences: moderation, families, max-t, power) makes its answer.
The truth is the population over images: mu_b - mu_a.
"""
from dataclasses import dataclass, field, replace
from typing import Dict, List, Sequence, Tuple

import numpy as np
from scipy import signal

from ..evaluation import bootstrap_weights
from ..evaluation.intervals import LEVEL, t_two_sided
from ..evaluation.power import mdd, power
from ..record.metrics import FINISHED
from .comparisons import DEFAULT_PRIMARY, differences, setting_intervals, sweep_noise
from .convergence import WINDOW, LossLog, trend
from .samples import RunSamples

TAILS = ("normal", "t5", "contaminated")  # training noise: t(5), or 5% of runs with 3x the sd
CONTAMINATION = (0.05, 3.0)


@dataclass(frozen=True)
class Scenario:
    norms: Tuple[str, ...] = ("bn", "gn", "frn")
    ims: Tuple[int, ...] = (1, 4)
    seeds: int = 3
    images: int = 200
    resamples: int = 200
    train_sd: float = 0.5  # AP points, one run's training noise
    seed_effect_sd: float = 0.3  # shared by the settings of one seed
    image_sd: float = 3.0  # per image, setting-specific (image variance of a difference)
    run_image_sd: float = 3.0  # per image, run-specific
    difficulty_sd: float = 10.0
    tails: str = "normal"
    noisy: Tuple[str, int] = ("bn", 1)  # the setting whose training sd is noisy_ratio x the others'
    noisy_ratio: float = 1.0
    level: float = 20.0  # AP of every setting (inside AP's range: the report truncates intervals to it)
    truth: Dict[Tuple[str, int], float] = field(default_factory=dict)  # mu - level per setting (default 0)
    primary: Tuple[str, ...] = DEFAULT_PRIMARY

    @property
    def settings(self) -> List[Tuple[str, int]]:
        return [(n, i) for n in self.norms for i in self.ims]


def many_norms(count: int = 13) -> Tuple[str, ...]:
    """bn, gn, frn and count - 3 more (a sweep over the harness's norm entries)."""
    return ("bn", "gn", "frn") + tuple(f"norm{k}" for k in range(count - 3))


def _training_noise(rng, shape, tails: str) -> np.ndarray:
    if tails == "normal":
        return rng.standard_normal(shape)
    if tails == "t5":
        return rng.standard_t(5, shape) / np.sqrt(5 / 3)  # unit variance
    share, ratio = CONTAMINATION
    wide = rng.random(shape) < share
    return rng.standard_normal(shape) * np.where(wide, ratio, 1.0) / np.sqrt(1 - share + share * ratio ** 2)


def synthetic_sweep(sc: Scenario, rng, W: np.ndarray) -> Tuple[List[dict], Dict[str, RunSamples]]:
    """Runs and their samples as the report reads them (W: the resample weights, (R, I))."""
    settings = sc.settings
    G, n, I = len(settings), sc.seeds, sc.images
    sd = np.array([sc.train_sd * (sc.noisy_ratio if s == sc.noisy else 1.0) for s in settings])
    mu = np.array([sc.level + sc.truth.get(s, 0.0) for s in settings])
    scores = (mu[:, None, None] + sc.seed_effect_sd * rng.standard_normal((1, n, 1))
              + sd[:, None, None] * _training_noise(rng, (G, n, 1), sc.tails)
              + sc.difficulty_sd * rng.standard_normal((1, 1, I)) + sc.image_sd * rng.standard_normal((G, 1, I))
              + sc.run_image_sd * rng.standard_normal((G, n, I)))
    ap = scores.mean(axis=-1)
    boot = scores @ W.T / I  # (G, n, R): the same resamples for every run
    runs, samples = [], {}
    for g, (norm, ims) in enumerate(settings):
        for s in range(n):
            source = f"{norm}_{ims}_{s}"
            runs.append({"norm": norm, "ims_per_gpu": ims, "seed": s, "status": FINISHED, "source": source,
                         "lr_scale": 1.0})
            samples[source] = RunSamples({"AP": float(ap[g, s])}, {"AP": boot[g, s]}, "test")
    return runs, samples


def simulate(sc: Scenario, reps: int, seed: int = 0, effect: float = 0.5) -> Dict[str, float]:
    """Rates over `reps` sweeps:
    - fwer: share of sweeps with a false star (a starred difference whose truth is 0);
    - fwer_signal: the same for the exploratory family's marks;
    - covered / covered_noisy: coverage of the differences' intervals alone (not involving /
      involving the noisy setting), and setting_covered of the settings' intervals;
    - stars[comparison]: how often "norm-base@ims" was starred; mdd[...]: its median MDD;
      stated_power[...]: the mean power the report states for `effect`."""
    rng = np.random.default_rng(seed)
    W = bootstrap_weights(sc.images, sc.resamples, seed=seed + 1).astype(np.float64)
    counts = {"fwer": 0, "fwer_signal": 0}
    hits = {"covered": [0, 0], "covered_noisy": [0, 0], "setting_covered": [0, 0]}
    stars: Dict[str, int] = {}
    mdds: Dict[str, List[float]] = {}
    stated: Dict[str, List[float]] = {}
    for _ in range(reps):
        runs, samples = synthetic_sweep(sc, rng, W)
        noise = sweep_noise(runs, samples)
        false_star = false_signal = False
        for d in differences(runs, samples, "AP", noise, effect, sc.primary):
            ims = d["ims_per_gpu"]
            truth = sc.truth.get((d["norm"], ims), 0.0) - sc.truth.get((d["baseline"], ims), 0.0)
            iv = d["interval"]
            name = f"{d['norm']}-{d['baseline']}@{d['ims_per_gpu']}"
            involved = sc.noisy_ratio != 1 and sc.noisy in ((d["norm"], d["ims_per_gpu"]),
                                                            (d["baseline"], d["ims_per_gpu"]))
            key = "covered_noisy" if involved else "covered"
            hits[key][0] += iv.lo <= truth <= iv.hi
            hits[key][1] += 1
            stars[name] = stars.get(name, 0) + d["starred"]
            if d["mdd"] is not None:
                mdds.setdefault(name, []).append(d["mdd"])
                critical = (d["adjusted"].hi - d["adjusted"].value) / iv.se
                stated.setdefault(name, []).append(power(effect, iv.se, iv.df, critical))
            false_star |= d["starred"] and truth == 0
            false_signal |= d["signal"] and truth == 0
        for (norm, ims), iv in setting_intervals(runs, samples, "AP", noise).items():
            hits["setting_covered"][0] += iv.lo <= sc.level + sc.truth.get((norm, ims), 0.0) <= iv.hi
            hits["setting_covered"][1] += 1
        counts["fwer"] += false_star
        counts["fwer_signal"] += false_signal
    out = {k: v / reps for k, v in counts.items()}
    out.update({k: (h / t if t else float("nan")) for k, (h, t) in hits.items()})
    out["stars"] = {k: v / reps for k, v in stars.items()}
    out["mdd"] = {k: float(np.median(v)) for k, v in mdds.items()}
    out["stated_power"] = {k: float(np.mean(v)) for k, v in stated.items()}
    return out


def power_at_mdd(sc: Scenario, comparison: Tuple[str, str, int], reps: int, seed: int = 0
                 ) -> Tuple[float, float, float]:
    """(the median MDD the report prints for `comparison` (norm, baseline, ims) under the null,
    the mean power the report states for that difference when it is the truth, the share of
    those sweeps that star it): stated and found should agree."""
    norm, base, ims = comparison
    name = f"{norm}-{base}@{ims}"
    printed = simulate(sc, reps, seed)["mdd"][name]
    found = simulate(replace(sc, truth={**sc.truth, (norm, ims): sc.truth.get((base, ims), 0.0) + printed}),
                     reps, seed + 1, effect=printed)
    return printed, found["stated_power"][name], found["stars"][name]


def exact_t_power(df: int, reps: int, seed: int = 0) -> float:
    """The found rate at the MDD of a design whose statistic is exactly t(df) (seed noise
    only, sd 1): the noncentral t's own check; (t(0.975) + t(0.8)) x SE read 0.73 at df 1."""
    rng = np.random.default_rng(seed)
    se, critical = 1.0, t_two_sided(LEVEL, df)
    delta = mdd(se, df, critical)
    t = (delta + se * rng.standard_normal(reps)) / (se * np.sqrt(rng.chisquare(df, reps) / df))
    return float(np.mean(np.abs(t) > critical))


def per_pair(seeds: int, reps: int, seed: int = 0, **kwargs) -> Dict[str, float]:
    """One pair alone (two settings): nothing to borrow, its own variance; the default
    scenario's image term is about half of the difference's variance at 3 seeds."""
    sc = Scenario(norms=("bn", "frn"), ims=(1,), seeds=seeds, primary=("frn-bn",), **kwargs)
    return simulate(sc, reps, seed)


def coverage_rows(reps: int, norms: Sequence[str] = many_norms()) -> List[Tuple[str, float, str]]:
    """(row, value, target) of the table in docs/intervals.md."""
    big = Scenario(norms=tuple(norms))
    null = simulate(big, reps, seed=1)
    one_family = simulate(replace(big, primary=()), reps, seed=2)
    rows = [
        (f"false star in a sweep, global null, {len(norms)} norms x 2 x 3 seeds, primary family",
         null["fwer"], "<= 0.05"),
        ("false exploratory mark (°) in the same sweeps", null["fwer_signal"], "<= 0.05"),
        ("false star, the whole table as one family", one_family["fwer"], "<= 0.05"),
        ("differences covered (alone), equal variances", null["covered"], "0.93-0.97"),
        ("settings covered, equal variances", null["setting_covered"], "0.93-0.97"),
    ]
    for ratio in (2.0, 4.0):
        c = simulate(replace(big, noisy_ratio=ratio), reps, seed=int(ratio) + 2)
        rows += [(f"one setting (bn@1) at {ratio:g}x sd: its differences covered", c["covered_noisy"], ">= 0.90"),
                 (f"one setting at {ratio:g}x sd: the other differences covered", c["covered"], "0.93-0.97")]
    for tails in TAILS[1:]:
        c = simulate(replace(big, tails=tails), reps, seed=len(tails))
        rows.append((f"differences covered, {tails} training noise", c["covered"], "0.93-0.97"))
    for n in (2, 3, 5):
        c = per_pair(n, 4 * reps, seed=10 + n)
        rows.append((f"one pair alone, {n} seeds: covered", c["covered"], "0.93-0.97"))
    for df in (1, 2, 4, 12):
        rows.append((f"power at the MDD of an exactly t({df}) design", exact_t_power(df, 100 * reps, seed=df),
                     "0.80"))
    printed, stated, found = power_at_mdd(Scenario(), ("frn", "gn", 1), reps, seed=20)
    rows += [(f"default grid, frn-gn@1, true difference = its median printed MDD ({printed:.2f} AP): power the "
              "report states", stated, "reported"),
             ("... and the share of sweeps that star it", found, "stated +- 0.04")]
    return rows


# ------------------------------------------------------------------ convergence flag
def synthetic_log(rng, end: int, steps: Sequence[int], fall: float, step_drop: float = 0.05, phi: float = 0.0,
                  slow_sd: float = 0.0, noise_sd: float = 0.3, period: int = 20, base_lr: float = 0.01) -> LossLog:
    """A run's logged losses as Detectron2 writes them: each point the median of the last
    `period` iterations, every `period` iterations. The log loss falls by `fall` (a share)
    across the last WINDOW of the schedule and drops by `step_drop` at each lr step; the
    per-iteration noise is white (sd noise_sd, a minibatch's) plus a slow AR(1) wander
    (coefficient phi, stationary sd slow_sd)."""
    it = np.arange(end)
    level = np.log(2.0) + np.log(1 - fall) * np.clip((it - (1 - WINDOW) * end) / (WINDOW * end), 0, None)
    lr = np.full(end, base_lr)
    for s in steps:
        level[it >= s] += np.log(1 - step_drop)
        lr[it >= s] *= 0.1
    wander = signal.lfilter([1.0], [1.0, -phi], rng.standard_normal(end) * slow_sd * np.sqrt(1 - phi ** 2))
    loss = np.exp(level + wander + noise_sd * rng.standard_normal(end))
    points = np.arange(period - 1, end, period)
    medians = np.median(loss[: len(points) * period].reshape(len(points), period), axis=1)
    return LossLog((points + 1).astype(float), medians, lr[points])


SHORT = (1200, (880, 1120))  # the default grid's 1-image schedule: cpu_short, steps at 110 and 140 of 150
LONG = (12500, (8333, 11111))  # the paper's schedule at a tenth: 125 logged points per run in the window


def convergence_rows(reps: int, runs: int = 3) -> List[Tuple[str, float, str]]:
    """(row, rate, target): how often the flag fires on flat losses with lr steps inside the
    window and on losses still falling across it, on a short and a long schedule."""
    rng = np.random.default_rng(0)
    slow = dict(phi=0.99, slow_sd=0.1)  # a wander over ~100 iterations on top of the minibatch noise
    cases = [("short schedule, flat, 5% drop at each lr step: flagged", SHORT, dict(fall=0.0), "<= 0.05"),
             ("short schedule, loss falling 10% across the window: flagged", SHORT, dict(fall=0.10), "reported"),
             ("short schedule, loss falling 25%: flagged", SHORT, dict(fall=0.25), ">= 0.80"),
             ("long schedule, flat, lr steps, slow AR(1) wander: flagged", LONG, dict(fall=0.0, **slow), "<= 0.05"),
             ("long schedule, falling 10%, slow AR(1) wander: flagged", LONG, dict(fall=0.10, **slow), "reported"),
             ("long schedule, falling 25%, slow AR(1) wander: flagged", LONG, dict(fall=0.25, **slow), ">= 0.80")]
    rows = []
    for name, (end, steps), kw, target in cases:
        flagged = 0
        for _ in range(reps):
            result = trend([synthetic_log(rng, end, steps, **kw) for _ in range(runs)], end)
            flagged += bool(result and result["still_falling"])
        rows.append((name, flagged / reps, target))
    return rows
