"""The interval model: training seeds and test images in every interval (docs/intervals.md).

Pure functions of numbers: a run is its point AP and its bootstrap samples over the test
images (per_image.py re-accumulates them, report/samples.py caches them; every run on the
same images has the same resamples).

- Seed variance: pooled over the sweep's settings (one-way ANOVA residual, df = sum of
  n_i - 1), unless Bartlett's test says the settings' variances are too unequal
  (p < HOMOGENEITY_ALPHA): then each setting (each pair) uses its own variance.
- Differences of settings run with the same seeds are paired by seed: pooled, the
  residual of the two-way fit setting + seed; per pair, the seed-wise difference's variance.
- Image variance: the part of the bootstrap variance that the seeds share (mean
  covariance of the seeds' resampled APs), so the per-run image noise that the seed
  spread already contains is not counted twice. One seed: the whole bootstrap variance.
- value +- t(df) x sqrt(seed term + image term), df by Welch-Satterthwaite with the
  image term counted as exact. One seed: no training noise; a setting is AP +- z x its
  bootstrap SE, a difference the percentile interval of the paired resampled differences.
- Power: the minimum detectable difference (MDD) at POWER and LEVEL, and the seeds
  needed to detect a given effect with the same design.
"""
import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Callable, Dict, Hashable, Optional, Sequence, Tuple

import numpy as np

LEVEL = 0.95
POWER = 0.80
HOMOGENEITY_ALPHA = 0.05  # Bartlett's p below this: the seed variances are not pooled
MAX_SEEDS = 1000  # seeds_needed answers None beyond this

# How an interval got its training noise (Interval.model).
IMAGES_ONLY = "images only"
POOLED = "pooled"
PAIRED_POOLED = "paired, pooled"
PER_SETTING = "per setting"
PAIRED_PER_PAIR = "paired, per pair"


def t_two_sided(level: float, df: float) -> float:
    """P(|T_df| <= q) = level; df floored to an integer (the wider side), normal when huge."""
    if not math.isfinite(df) or df > 1e6:
        return NormalDist().inv_cdf(0.5 + level / 2)
    return _t_integer(level, max(1, int(df)))


@lru_cache(maxsize=None)
def _t_integer(level: float, df: int) -> float:
    """scipy when installed, else the exact finite series."""
    try:
        from scipy.stats import t as student_t
    except ImportError:
        return _t_quantile_series(level, df)
    return float(student_t.ppf(0.5 + level / 2, df))


def _t_quantile_series(level: float, df: int) -> float:
    """Two-sided Student t quantile for an integer df (Abramowitz & Stegun 26.7.3-4)."""
    if df != int(df) or df < 1:
        raise ValueError(f"df must be a positive integer, got {df}")
    df = int(df)
    if df > 300:  # Cornish-Fisher expansion around the normal quantile (error < 1e-10)
        z = NormalDist().inv_cdf(0.5 + level / 2)
        g = [(z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96,
             (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
             (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160]
        return z + sum(gi / df ** (i + 1) for i, gi in enumerate(g))

    def abs_cdf(theta):  # P(|T| <= sqrt(df) * tan(theta)), increasing in theta
        s, c = math.sin(theta), math.cos(theta)
        if df == 1:
            return 2 * theta / math.pi
        term = acc = c if df % 2 else 1.0
        for k in range(3 if df % 2 else 2, df - 1, 2):
            term *= c * c * (k - 1) / k
            acc += term
        return 2 / math.pi * (theta + s * acc) if df % 2 else s * acc

    lo, hi = 0.0, math.pi / 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if abs_cdf(mid) < level else (lo, mid)
    return math.sqrt(df) * math.tan((lo + hi) / 2)


def t_one_sided(p: float, df: float) -> float:
    """P(T_df <= q) = p, for p > 0.5."""
    return t_two_sided(2 * p - 1, df)


@dataclass(frozen=True)
class Interval:
    value: float
    lo: float
    hi: float
    n: int  # seeds behind the value (the smaller side of a difference)
    se: float = math.nan
    df: float = math.inf
    model: str = IMAGES_ONLY
    seed_var: float = 0.0  # training-noise part of se^2 (0: images only)
    image_var: float = math.nan  # test-image part of se^2

    @property
    def training_noise(self) -> bool:
        """False for one seed: the interval covers test-image sampling only."""
        return self.model != IMAGES_ONLY

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    @property
    def significant(self) -> bool:
        """The report's `*`: excludes 0 with training noise in the interval."""
        return self.training_noise and self.excludes_zero

    @property
    def mdd(self) -> float:
        """Minimum detectable difference of this design: POWER to detect it at LEVEL."""
        return (t_two_sided(LEVEL, self.df) + t_one_sided(POWER, self.df)) * self.se


# ------------------------------------------------------------------ seed variance
@dataclass(frozen=True)
class SeedVariance:
    """The seed variance of one run's AP, estimated from all settings of a sweep."""

    variance: float  # one-way residual: pooled within-setting variance (nan when df 0)
    df: int
    paired_variance: float  # residual of setting + seed (seeds as blocks); nan when paired_df 0
    paired_df: int
    settings: int  # settings with >= 2 seeds
    bartlett_p: float  # nan with fewer than 2 such settings
    pooled: bool  # False: variances too unequal (or nothing to pool); per-setting variances

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in self.__dict__.items()}


def chi2_sf(x: float, k: int) -> float:
    """P(chi2_k > x) for an integer k (closed form, no scipy)."""
    if x <= 0:
        return 1.0
    if k % 2 == 0:
        term = total = math.exp(-x / 2)
        for i in range(1, k // 2):
            term *= (x / 2) / i
            total += term
        return min(1.0, total)
    total = 2 * (1 - NormalDist().cdf(math.sqrt(x)))
    term = math.sqrt(2 * x / math.pi) * math.exp(-x / 2)
    for i in range(1, (k + 1) // 2):
        total += term
        term *= x / (2 * i + 1)
    return min(1.0, total)


def bartlett_p(variances: Sequence[float], dfs: Sequence[int]) -> float:
    """Bartlett's test that all variances are equal: its p value (0 when one is 0)."""
    k = len(variances)
    if k < 2:
        return math.nan
    v, d = np.asarray(variances, float), np.asarray(dfs, float)
    if np.any(v <= 0):
        return 0.0 if np.any(v > 0) else 1.0
    total = d.sum()
    pooled = float((d * v).sum() / total)
    stat = total * math.log(pooled) - float((d * np.log(v)).sum())
    correction = 1 + (float((1 / d).sum()) - 1 / total) / (3 * (k - 1))
    return chi2_sf(stat / correction, k - 1)


def seed_variance(settings: Dict[Hashable, Sequence[Tuple[Hashable, float]]]) -> SeedVariance:
    """{setting: [(seed, AP), ...]} -> the pooled seed variance and the homogeneity check.
    Settings whose seeds are all known and distinct also enter the paired (setting + seed) fit."""
    groups = [np.array([ap for _, ap in v], float) for v in settings.values() if len(v) > 1]
    dfs = [len(g) - 1 for g in groups]
    df = sum(dfs)
    variances = [float(g.var(ddof=1)) for g in groups]
    variance = sum(d * v for d, v in zip(dfs, variances)) / df if df else math.nan
    p = bartlett_p(variances, dfs)
    paired_variance, paired_df = _setting_plus_seed_residual(
        {k: dict(v) for k, v in settings.items() if len(v) > 1 and _same_seeds([s for s, _ in v], [s for s, _ in v])})
    pooled = df > 0 and not (p < HOMOGENEITY_ALPHA)
    return SeedVariance(variance, df, paired_variance, paired_df, len(groups), p, pooled)


def _setting_plus_seed_residual(settings: Dict[Hashable, Dict[Hashable, float]]) -> Tuple[float, int]:
    """Residual variance and df of AP ~ setting + seed (least squares, any missing cells)."""
    rows = [(s, seed, ap) for s, by_seed in settings.items() for seed, ap in by_seed.items()]
    if not rows:
        return math.nan, 0
    s_index = {s: i for i, s in enumerate(settings)}
    seeds = sorted({seed for _, seed, _ in rows}, key=str)
    seed_index = {seed: i for i, seed in enumerate(seeds)}
    X = np.zeros((len(rows), len(s_index) + len(seeds)))
    for r, (s, seed, _) in enumerate(rows):
        X[r, s_index[s]] = 1
        X[r, len(s_index) + seed_index[seed]] = 1
    y = np.array([ap for _, _, ap in rows])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    df = len(rows) - int(np.linalg.matrix_rank(X))
    if df <= 0:
        return math.nan, 0
    return float(((y - X @ coef) ** 2).sum() / df), df


# ---------------------------------------------------------------- image variance
def _finite_columns(boot: np.ndarray) -> np.ndarray:
    boot = np.atleast_2d(np.asarray(boot, float))
    return boot[:, np.all(np.isfinite(boot), axis=0)]


def _var(samples: np.ndarray) -> float:
    finite = samples[np.isfinite(samples)]
    return float(np.var(finite, ddof=1)) if len(finite) > 1 else math.nan


def _percentiles(samples: np.ndarray, level: float) -> Tuple[float, float, float]:
    """(lo, hi, std) of the finite samples: the central `level` percentile range; NaNs
    when fewer than 2 are finite."""
    samples = np.asarray(samples, dtype=np.float64)
    finite = samples[np.isfinite(samples)]
    if len(finite) < 2:
        return math.nan, math.nan, math.nan
    lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi), float(np.std(finite, ddof=1))


def run_image_variance(boot: np.ndarray) -> Tuple[float, float]:
    """(V, C) of the seeds' resampled APs (n, R): V the mean bootstrap variance of one
    run, C the mean covariance between two seeds (the image noise they share; nan for
    one seed), C clipped to [0, V]."""
    b = _finite_columns(boot)
    n = len(b)
    if b.shape[1] < 2:
        return math.nan, math.nan
    cov = np.atleast_2d(np.cov(b))
    V = float(np.trace(cov) / n)
    if n < 2:
        return V, math.nan
    C = float((cov.sum() - np.trace(cov)) / (n * (n - 1)))
    return V, min(max(C, 0.0), V)


# --------------------------------------------------------------------- intervals
def _combine(value: float, seed_terms: Sequence[Tuple[float, float]], image_var: float, n: int,
             model: str) -> Interval:
    """value +- t(df) sqrt(sum of seed terms + image_var); seed_terms: (variance of the
    mean, its df); df by Welch-Satterthwaite, image term exact."""
    seed_var = sum(v for v, _ in seed_terms)
    se = math.sqrt(seed_var + image_var)
    if not math.isfinite(se):
        return Interval(value, math.nan, math.nan, n, se, math.nan, model, seed_var, image_var)
    denominator = sum(v * v / d for v, d in seed_terms if v > 0)
    df = (seed_var + image_var) ** 2 / denominator if denominator > 0 else math.inf
    half = t_two_sided(LEVEL, df) * se
    return Interval(value, value - half, value + half, n, se, df, model, seed_var, image_var)


def setting_interval(values: Sequence[float], boot: np.ndarray, sv: Optional[SeedVariance] = None) -> Interval:
    """Interval of a setting's seed-mean AP. values (n,): the seeds' APs; boot (n, R):
    their resampled APs (the same resamples); sv: the sweep's seed variance."""
    values = np.asarray(values, float)
    n, value = len(values), float(np.mean(values))
    V, C = run_image_variance(boot)
    if n == 1:  # images only: mean +- z SE (a percentile interval can miss the biased point)
        return _combine(value, [], V, 1, IMAGES_ONLY)
    if sv is not None and sv.pooled:
        return _combine(value, [(sv.variance / n, sv.df)], C, n, POOLED)
    return _combine(value, [(float(values.var(ddof=1)) / n, n - 1)], C, n, PER_SETTING)


def difference_interval(a: Sequence[float], a_boot: np.ndarray, b: Sequence[float], b_boot: np.ndarray,
                        sv: Optional[SeedVariance] = None, a_seeds: Optional[Sequence] = None,
                        b_seeds: Optional[Sequence] = None) -> Interval:
    """Interval of mean(b) - mean(a); paired by seed when both ran the same seeds."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a_boot, b_boot = np.atleast_2d(a_boot), np.atleast_2d(b_boot)
    value = float(b.mean() - a.mean())
    boot_diff = b_boot.mean(axis=0) - a_boot.mean(axis=0)
    na, nb = len(a), len(b)
    if na == 1 or nb == 1:  # images only: the percentile interval (the bias cancels in a difference)
        lo, hi, sd = _percentiles(boot_diff, LEVEL)
        return Interval(value, lo, hi, min(na, nb), sd, math.inf, IMAGES_ONLY, 0.0, sd * sd)
    pooled = sv is not None and sv.pooled
    if _same_seeds(a_seeds, b_seeds):
        ia, ib = np.argsort([str(s) for s in a_seeds]), np.argsort([str(s) for s in b_seeds])
        d = b[ib] - a[ia]
        _, C = run_image_variance(b_boot[ib] - a_boot[ia])
        n = len(d)
        if pooled and sv.paired_df > 0:
            return _combine(value, [(2 * sv.paired_variance / n, sv.paired_df)], C, n, PAIRED_POOLED)
        return _combine(value, [(float(d.var(ddof=1)) / n, n - 1)], C, n, PAIRED_PER_PAIR)
    Va, Ca = run_image_variance(a_boot)
    Vb, Cb = run_image_variance(b_boot)
    image = max(0.0, _var(boot_diff) - (Vb - Cb) / nb - (Va - Ca) / na)
    if pooled:
        return _combine(value, [(sv.variance * (1 / na + 1 / nb), sv.df)], image, min(na, nb), POOLED)
    terms = [(float(a.var(ddof=1)) / na, na - 1), (float(b.var(ddof=1)) / nb, nb - 1)]
    return _combine(value, terms, image, min(na, nb), PER_SETTING)


def _same_seeds(a_seeds, b_seeds) -> bool:
    if a_seeds is None or b_seeds is None or None in a_seeds or None in b_seeds:
        return False
    return len(set(a_seeds)) == len(a_seeds) and sorted(map(str, a_seeds)) == sorted(map(str, b_seeds))


# ------------------------------------------------------------------------- power
def seeds_needed(effect: float, per_seed_var: float, image_var: float, df_of: Callable[[int], float]
                 ) -> Optional[int]:
    """Smallest n with (t_{LEVEL}(df) + t_{POWER}(df)) sqrt(per_seed_var / n + image_var)
    <= effect, df = df_of(n); None when no n up to MAX_SEEDS does (the test-image
    variance alone is too large: more test images are needed) or nothing is known."""
    if not (effect > 0 and math.isfinite(per_seed_var) and math.isfinite(image_var)):
        return None

    def detects(n: int) -> bool:
        df = df_of(n)
        se = math.sqrt(per_seed_var / n + image_var)
        return df >= 1 and (t_two_sided(LEVEL, df) + t_one_sided(POWER, df)) * se <= effect

    z = t_two_sided(LEVEL, math.inf) + t_one_sided(POWER, math.inf)
    if z * math.sqrt(image_var) > effect or not detects(MAX_SEEDS):
        return None
    lo, hi = 1, MAX_SEEDS  # detects(hi) holds; bisect the smallest such n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if detects(mid) else (mid, hi)
    return hi


@dataclass(frozen=True)
class Design:
    """What seeds_needed needs for one comparison, taken from the design that ran."""

    per_seed_var: float  # variance of one seed's difference (the seed term is this / n)
    image_var: float  # image variance of the difference (does not shrink with seeds)
    model: str
    settings: int  # settings the seed variance is pooled over

    def df(self, n: int) -> float:
        """Degrees of freedom of the seed variance if every setting had n seeds."""
        if self.model == PAIRED_POOLED:
            return (self.settings - 1) * (n - 1)
        if self.model == POOLED:
            return self.settings * (n - 1)
        return n - 1  # one pair's own variance (conservative for Welch)

    def seeds_needed(self, effect: float) -> Optional[int]:
        return seeds_needed(effect, self.per_seed_var, self.image_var, self.df)


def difference_design(interval: Interval, sv: Optional[SeedVariance]) -> Optional[Design]:
    """The design behind a difference interval, for planning; None without any seed variance."""
    if interval.model == IMAGES_ONLY:
        # One seed: borrow the sweep's pooled variance when there is one.
        if sv is None or not sv.pooled:
            return None
        return Design(2 * sv.variance, interval.image_var, POOLED, sv.settings)
    settings = sv.settings if interval.model in (POOLED, PAIRED_POOLED) else 2
    return Design(interval.seed_var * interval.n, interval.image_var, interval.model, settings)
