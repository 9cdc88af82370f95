"""Where an interval's training noise comes from: each setting's (each pair's) own seed
variance, moderated toward the sweep's (docs/intervals.md).

A sweep has many settings with few seeds each. Their seed variances are shrunk toward a
prior fitted to all of them, empirical-Bayes as in limma (Smyth 2004): a unit with variance
s^2 on d df and the prior (s0^2, d0) gets (d0 s0^2 + d s^2) / (d0 + d) on d0 + d df (at most
the df the whole sweep has). d0 is estimated from how much the variances spread beyond
what their own df explain: equal variances give a large d0 (pooling), unequal ones a small
d0 (each keeps its own). No pre-test switches pooling on or off for the whole sweep.

- Units: a setting's seed variance (for its mean's interval); a pair's seed-wise difference
  variance on the seeds both finished (for a paired difference: the seed effects cancel).
- Erratic: a setting whose seed variance is above the prior's upper ERRATIC_ALPHA tail
  (F test) keeps its own variance, and so do the pairs it is in: shrinking it would hide
  the noise it showed. The priors the others are shrunk toward are refitted without them.
- Zero: a setting (pair) whose seeds gave identical values is left out of the prior fit
  and named (report: no star; a seed that never reached the training, or a copied result).
"""
import math
from dataclasses import dataclass, field
from typing import Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np
from scipy import special, stats

from .intervals import MODERATED, OWN

ERRATIC_ALPHA = 0.05
ZERO = 1e-12  # a variance at or below this (AP points^2) is zero: the seeds agree to the last digit


@dataclass(frozen=True)
class Prior:
    """The scaled inverse-chi^2 prior of the units' variances: scale s0^2, df d0 (inf: all equal)."""

    scale: float
    df: float
    units: int  # units it was fitted to


def _trigamma_inverse(x: float) -> float:
    """y with trigamma(y) = x (Newton's method as in limma's trigammaInverse)."""
    if x > 1e7:
        return 1 / math.sqrt(x)
    if x < 1e-6:
        return 1 / x
    y = 0.5 + 1 / x
    for _ in range(50):
        tri = float(special.polygamma(1, y))
        step = tri * (1 - tri / x) / float(special.polygamma(2, y))
        y += step
        if -step / y < 1e-8:
            break
    return y


def fit_prior(variances: Sequence[float], dfs: Sequence[float]) -> Optional[Prior]:
    """limma's fitFDist by moments of log s^2; None with fewer than 2 positive variances."""
    s2, d = np.asarray(variances, float), np.asarray(dfs, float)
    keep = (s2 > ZERO) & (d > 0)
    s2, d = s2[keep], d[keep]
    if len(s2) < 2:
        return None
    e = np.log(s2) - special.digamma(d / 2) + np.log(d / 2)
    excess = float(np.var(e, ddof=1) - np.mean(special.polygamma(1, d / 2)))
    if excess <= 0:
        return Prior(float(math.exp(e.mean())), math.inf, len(s2))
    d0 = 2 * _trigamma_inverse(excess)
    return Prior(float(math.exp(e.mean() + special.digamma(d0 / 2) - math.log(d0 / 2))), d0, len(s2))


def moderate(variance: float, df: float, prior: Optional[Prior], cap: float) -> Tuple[float, float]:
    """(variance, df) shrunk toward the prior; df at most `cap` (what the sweep holds)."""
    if prior is None:
        return variance, df
    if math.isinf(prior.df):
        return prior.scale, cap
    return (prior.df * prior.scale + df * variance) / (prior.df + df), min(prior.df + df, cap)


def upper_tail(variance: float, df: float, prior: Optional[Prior]) -> float:
    """P(s^2 >= variance) for a unit drawn from the prior: F(df, d0) x s0^2."""
    if prior is None or not df > 0:
        return math.nan
    ratio = variance / prior.scale
    if math.isinf(prior.df):
        return float(stats.chi2.sf(df * ratio, df))
    return float(stats.f.sf(ratio, df, prior.df))


@dataclass(frozen=True)
class Unit:
    """One setting's (or pair's) seed variance, and what the interval uses of it."""

    own: float  # its seeds' variance (one run's, or one seed's difference)
    own_df: int
    variance: float  # what the interval uses
    df: float
    model: str  # MODERATED or OWN
    zero: bool = False


@dataclass
class SeedNoise:
    """The sweep's training noise for one metric: {setting: {seed: AP}} in, units out."""

    settings: Dict[Hashable, Unit] = field(default_factory=dict)
    pairs: Dict[Tuple[Hashable, Hashable], Unit] = field(default_factory=dict)  # key: sorted (a, b)
    setting_prior: Optional[Prior] = None
    pair_prior: Optional[Prior] = None
    erratic: Dict[Hashable, float] = field(default_factory=dict)  # setting -> its upper-tail p
    setting_cap: int = 0  # df of the one-way residual: sum of n - 1
    pair_cap: int = 0  # df of the setting + seed residual
    pair_settings: int = 0  # settings in that fit

    def setting(self, key) -> Optional[Unit]:
        return self.settings.get(key)

    def pair(self, a, b) -> Optional[Unit]:
        return self.pairs.get(_pair_key(a, b))

    @property
    def zero(self) -> List[Hashable]:
        return [k for k, u in self.settings.items() if u.zero]

    def as_dict(self) -> dict:
        def prior(p: Optional[Prior]):
            return None if p is None else {"scale": p.scale, "df": None if math.isinf(p.df) else p.df,
                                           "units": p.units}
        return {"setting_prior": prior(self.setting_prior), "pair_prior": prior(self.pair_prior),
                "settings": len(self.settings), "pairs": len(self.pairs), "setting_df_cap": self.setting_cap,
                "pair_df_cap": self.pair_cap, "erratic": [_name(k) for k in self.erratic],
                "zero_variance": [_name(k) for k in self.zero]}


def _name(key) -> str:
    return "@".join(str(k) for k in key) if isinstance(key, tuple) else str(key)


def _pair_key(a, b):
    return (a, b) if str(a) <= str(b) else (b, a)


def known_seeds(by_seed: Dict[Hashable, float]) -> bool:
    return None not in by_seed


def shared_seeds(a: Dict[Hashable, float], b: Dict[Hashable, float]) -> List[Hashable]:
    """Seeds both settings finished, in a fixed order; [] when either has unknown seeds."""
    if not (known_seeds(a) and known_seeds(b)):
        return []
    return sorted(set(a) & set(b), key=str)


def seed_noise(settings: Dict[Hashable, Sequence[Tuple[Hashable, float]]]) -> SeedNoise:
    """{setting: [(seed, AP), ...]} -> the moderated seed variances of its settings and pairs.
    A seed that is None (unknown) or repeated makes a setting unpairable."""
    noise = SeedNoise()
    by_seed = {k: _seed_map(v) for k, v in settings.items()}
    own = {k: np.array([ap for _, ap in v], float) for k, v in settings.items() if len(v) > 1}
    noise.setting_cap = sum(len(v) - 1 for v in own.values())
    variances = {k: (float(v.var(ddof=1)), len(v) - 1) for k, v in own.items()}
    first = fit_prior([v for v, _ in variances.values()], [d for _, d in variances.values()])
    for key, (s2, d) in variances.items():
        p = upper_tail(s2, d, first)
        if p < ERRATIC_ALPHA:
            noise.erratic[key] = p
    # The others' prior without the erratic ones: one noisy setting must not take their df.
    ordinary = [variances[k] for k in variances if k not in noise.erratic]
    noise.setting_prior = fit_prior([v for v, _ in ordinary], [d for _, d in ordinary])
    for key, (s2, d) in variances.items():
        noise.settings[key] = _unit(s2, d, noise.setting_prior, noise.setting_cap, key in noise.erratic)

    pairable = {k: m for k, m in by_seed.items() if m is not None and len(m) > 1}
    noise.pair_cap, noise.pair_settings = setting_plus_seed_df(pairable)
    own_pairs = {}
    keys = list(pairable)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            seeds = shared_seeds(pairable[a], pairable[b])
            if len(seeds) > 1:
                d = np.array([pairable[b][s] - pairable[a][s] for s in seeds])
                own_pairs[_pair_key(a, b)] = (float(d.var(ddof=1)), len(seeds) - 1)
    ordinary = [v for k, v in own_pairs.items() if not any(s in noise.erratic for s in k)]
    noise.pair_prior = fit_prior([v for v, _ in ordinary], [d for _, d in ordinary])
    for key, (s2, d) in own_pairs.items():
        erratic = any(k in noise.erratic for k in key)
        noise.pairs[key] = _unit(s2, d, noise.pair_prior, noise.pair_cap, erratic)
    return noise


def _seed_map(runs: Sequence[Tuple[Hashable, float]]) -> Optional[Dict[Hashable, float]]:
    seeds = [s for s, _ in runs]
    if None in seeds or len(set(seeds)) != len(seeds):
        return None
    return {s: float(ap) for s, ap in runs}


def _unit(s2: float, d: int, prior: Optional[Prior], cap: int, erratic: bool) -> Unit:
    zero = s2 <= ZERO
    if erratic or prior is None:
        return Unit(s2, d, s2, d, OWN, zero)
    variance, df = moderate(s2, d, prior, max(cap, d))
    return Unit(s2, d, variance, df, MODERATED, zero)


def setting_plus_seed_df(settings: Dict[Hashable, Dict[Hashable, float]]) -> Tuple[int, int]:
    """(residual df, settings) of AP ~ setting + seed over settings whose seeds are known:
    the most df a pair's moderated variance can have."""
    rows = [(s, seed) for s, by_seed in settings.items() for seed in by_seed]
    if not rows:
        return 0, 0
    s_index = {s: i for i, s in enumerate(settings)}
    seeds = sorted({seed for _, seed in rows}, key=str)
    seed_index = {seed: i for i, seed in enumerate(seeds)}
    X = np.zeros((len(rows), len(s_index) + len(seeds)))
    for r, (s, seed) in enumerate(rows):
        X[r, s_index[s]] = 1
        X[r, len(s_index) + seed_index[seed]] = 1
    return max(0, len(rows) - int(np.linalg.matrix_rank(X))), len(settings)


def paired_setting_variances(noise: SeedNoise) -> Dict[Hashable, float]:
    """Each setting's share of the pairs' seed-wise variances (v_ab = s_a + s_b, least
    squares, at least 0): the covariance of two differences that share a setting."""
    settings = sorted({k for pair in noise.pairs for k in pair}, key=str)
    if not settings:
        return {}
    index = {k: i for i, k in enumerate(settings)}
    X = np.zeros((len(noise.pairs), len(settings)))
    y = np.zeros(len(noise.pairs))
    for r, ((a, b), unit) in enumerate(noise.pairs.items()):
        X[r, index[a]] = X[r, index[b]] = 1
        y[r] = unit.variance
    share, *_ = np.linalg.lstsq(X, y, rcond=None)
    return {k: max(0.0, float(share[i])) for k, i in index.items()}
