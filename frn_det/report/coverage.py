"""Coverage of the interval model by simulation (tests/test_interval_coverage.py and
tools/benchmark_coverage.py).

A synthetic sweep with known truth: G settings x n seeds x I test images. The score of
image i in run (setting g, seed s), whose mean over the images is the run's AP, is

    mu_g + seed_effect_s + train_gs + difficulty_i + image_gi + run_image_gsi

seed_effect: shared by all settings of a seed (same data order); train: the training
noise of one run; difficulty: shared by every run; image: how setting g does on image i
(what makes the test set's verdict differ from the population's); run_image: one run's
own per-image noise. Every run is bootstrapped on the same resamples of the images, and
the report's own functions (evaluation/intervals.py) make the intervals. Coverage: how often the
interval holds the true value (mu_g, or mu_b - mu_a).
"""
from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np

from ..evaluation import bootstrap_weights
from ..evaluation.intervals import difference_interval, seed_variance, setting_interval


@dataclass(frozen=True)
class Scenario:
    settings: int = 6  # e.g. bn, gn, frn x 1, 4 images per GPU
    images: int = 200
    resamples: int = 200
    difference: float = 0.5  # true mu_b - mu_a of the compared pair (settings 0 and 1)
    train_sd: float = 0.5  # AP points, one run's training noise
    seed_effect_sd: float = 0.3  # shared by the settings of one seed
    image_sd: float = 3.0  # per image, setting-specific (image variance of a difference)
    run_image_sd: float = 3.0  # per image, run-specific
    difficulty_sd: float = 10.0
    train_sd_ratio: float = 1.0  # train_sd of the compared pair's setting b over the others'


def simulate(n_seeds: int, reps: int, scenario: Scenario = Scenario(), seed: int = 0) -> Dict[str, float]:
    """{"difference": coverage of mu_b - mu_a, "setting": coverage of mu_b, "pooled": share
    of replications that pooled, "width": mean width of the difference interval}."""
    sc = scenario
    rng = np.random.default_rng(seed)
    G, n, I = sc.settings, n_seeds, sc.images
    W = bootstrap_weights(I, sc.resamples, seed=seed + 1).astype(np.float64)  # (R, I)
    mu = np.zeros(G)
    mu[1] = sc.difference
    train_sd = np.full(G, sc.train_sd)
    train_sd[1] *= sc.train_sd_ratio
    hits = {"difference": 0, "setting": 0, "pooled": 0}
    width = 0.0
    chunk = max(1, 200_000 // (G * n * I))
    for start in range(0, reps, chunk):
        k = min(chunk, reps - start)
        scores = (mu[None, :, None, None]
                  + sc.seed_effect_sd * rng.standard_normal((k, 1, n, 1))
                  + train_sd[None, :, None, None] * rng.standard_normal((k, G, n, 1))
                  + sc.difficulty_sd * rng.standard_normal((k, 1, 1, I))
                  + sc.image_sd * rng.standard_normal((k, G, 1, I))
                  + sc.run_image_sd * rng.standard_normal((k, G, n, I)))
        ap = scores.mean(axis=-1)  # (k, G, n)
        boot = scores @ W.T / I  # (k, G, n, R): the same resamples for every run
        # The truth is the population over images: difficulty and image effects average to 0.
        for r in range(k):
            seeds = list(range(n))
            sv = seed_variance({g: list(zip(seeds, ap[r, g])) for g in range(G)})
            d = difference_interval(ap[r, 0], boot[r, 0], ap[r, 1], boot[r, 1], sv, seeds, seeds)
            s = setting_interval(ap[r, 1], boot[r, 1], sv)
            hits["difference"] += d.lo <= sc.difference <= d.hi
            hits["setting"] += s.lo <= mu[1] <= s.hi
            hits["pooled"] += sv.pooled
            width += d.hi - d.lo
    return {**{key: v / reps for key, v in hits.items()}, "width": width / reps}


def coverage_table(ns: Sequence[int] = (1, 3, 5), reps: int = 2000, scenario: Scenario = Scenario(),
                   seed: int = 0) -> Dict[int, Dict[str, float]]:
    return {n: simulate(n, reps, scenario, seed) for n in ns}
