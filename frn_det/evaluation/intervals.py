"""One interval: a seed term (training noise, estimated) plus an image term (test images,
from the paired bootstrap) in every interval (docs/intervals.md).

Pure functions of numbers: a run is its point AP and its bootstrap samples over the test
images (per_image.py re-accumulates them, report/samples.py caches them; every run on the
same images has the same resamples). Where the seed variances come from (each setting's own,
moderated toward the sweep's) is moderation.py; families of comparisons, multiplicity.py;
power, power.py.

- Image term: the part of the bootstrap variance that the seeds share (mean covariance of
  the seeds' resampled APs), so each run's own per-image noise, which the seed spread
  already contains, is not counted twice. One seed: the whole bootstrap variance.
- value +- t(df) x sqrt(seed term + image term). The seed term's df is that of its variance
  estimate; the image term is counted as exact, and df = seed df / share ** DF_EXPONENT,
  share = seed term / SE^2 (Welch-Satterthwaite would divide by share ** 2, which under-covers
  with 1-2 seed df: docs/intervals.md has the simulation that chose the exponent).
- One seed: no training noise; a setting is AP +- z x its bootstrap SE, a difference the
  percentile interval of the paired resampled differences.
- A setting's interval is truncated to AP's range [0, 100]: the truth lies in it, so the
  coverage is unchanged.
"""
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence, Tuple

import numpy as np
from scipy import stats

LEVEL = 0.95
AP_RANGE = (0.0, 100.0)  # COCO AP in %
DF_EXPONENT = 0.75  # df = seed df / seed share ** DF_EXPONENT (calibrated: docs/intervals.md)
NORMAL_DF = 1e6  # above this a t quantile is the normal one

# How an interval got its training noise (Interval.model).
IMAGES_ONLY = "images only"
MODERATED = "moderated"  # its own seed variance, shrunk toward the sweep's (moderation.py)
OWN = "own"  # its own seed variance alone (an erratic setting, or nothing to borrow from)
PAIRED = "paired, "  # prefix: seed by seed on the seeds both settings finished


def t_quantile(p: float, df: float) -> float:
    """P(T_df <= q) = p; df floored to an integer (the wider side), normal when huge."""
    if not math.isfinite(df) or df > NORMAL_DF:
        return float(stats.norm.ppf(p))
    return _t_integer(p, max(1, int(df)))


@lru_cache(maxsize=None)
def _t_integer(p: float, df: int) -> float:
    return float(stats.t.ppf(p, df))


def t_two_sided(level: float, df: float) -> float:
    """P(|T_df| <= q) = level."""
    return t_quantile(0.5 + level / 2, df)


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T_df| >= |t|), df floored as in t_quantile."""
    if not math.isfinite(df) or df > NORMAL_DF:
        return float(2 * stats.norm.sf(abs(t)))
    return float(2 * stats.t.sf(abs(t), max(1, int(df))))


def interval_df(seed_df: float, seed_var: float, image_var: float) -> float:
    """The df of value / SE: the seed term's df divided by its share of SE^2 to DF_EXPONENT."""
    total = seed_var + image_var
    if not (seed_var > 0 and total > 0) or not math.isfinite(seed_df):
        return math.inf
    return seed_df / (seed_var / total) ** DF_EXPONENT


@dataclass(frozen=True)
class Interval:
    value: float
    lo: float
    hi: float
    n: int  # seeds behind the value (the seeds both sides finished, for a paired difference)
    se: float = math.nan
    df: float = math.inf  # of value / se
    model: str = IMAGES_ONLY
    seed_var: float = 0.0  # training-noise part of se^2 (0: images only)
    image_var: float = math.nan  # test-image part of se^2
    seed_df: float = math.inf  # df of the seed part alone

    @property
    def training_noise(self) -> bool:
        """False for one seed: the interval covers test-image sampling only."""
        return self.model != IMAGES_ONLY

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    @property
    def t(self) -> float:
        return self.value / self.se if self.se > 0 else math.copysign(math.inf, self.value) if self.value else 0.0

    @property
    def p(self) -> float:
        """Two-sided p of value = 0 (one comparison alone, no family)."""
        return t_two_sided_p(self.t, self.df)

    def widened(self, critical: float) -> "Interval":
        """value +- critical x se: the same interval at another critical value (a family's)."""
        half = critical * self.se
        return Interval(self.value, self.value - half, self.value + half, self.n, self.se, self.df, self.model,
                        self.seed_var, self.image_var, self.seed_df)

    def within(self, lo: float, hi: float) -> "Interval":
        """Truncated to [lo, hi], where the truth must lie (AP_RANGE for a setting)."""
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            return self
        return Interval(self.value, min(max(self.lo, lo), hi), max(min(self.hi, hi), lo), self.n, self.se, self.df,
                        self.model, self.seed_var, self.image_var, self.seed_df)


def combine(value: float, seed_var: float, seed_df: float, image_var: float, n: int, model: str) -> Interval:
    """value +- t(df) sqrt(seed_var + image_var); df by interval_df."""
    se = math.sqrt(seed_var + image_var) if seed_var + image_var >= 0 else math.nan
    if not math.isfinite(se):
        return Interval(value, math.nan, math.nan, n, se, math.nan, model, seed_var, image_var, seed_df)
    df = interval_df(seed_df, seed_var, image_var)
    half = t_two_sided(LEVEL, df) * se
    return Interval(value, value - half, value + half, n, se, df, model, seed_var, image_var, seed_df)


def welch(terms: Sequence[Tuple[float, float]]) -> Tuple[float, float]:
    """(sum of the variances, Welch-Satterthwaite df) of independent (variance, df) terms."""
    total = sum(v for v, _ in terms)
    denominator = sum(v * v / d for v, d in terms if v > 0 and math.isfinite(d))
    return total, (total * total / denominator if denominator > 0 else math.inf)


# ---------------------------------------------------------------- image variance
def _finite_columns(boot: np.ndarray) -> np.ndarray:
    boot = np.atleast_2d(np.asarray(boot, float))
    return boot[:, np.all(np.isfinite(boot), axis=0)]


def bootstrap_var(samples: np.ndarray) -> float:
    finite = samples[np.isfinite(samples)]
    return float(np.var(finite, ddof=1)) if len(finite) > 1 else math.nan


def percentiles(samples: np.ndarray, level: float) -> Tuple[float, float, float]:
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


# ------------------------------------------------------------------ the intervals
def one_seed_setting(value: float, boot: np.ndarray) -> Interval:
    """One run: AP +- z x its bootstrap SE (a percentile interval can miss the point, which
    COCO AP's running-maximum precision biases upward under resampling)."""
    V, _ = run_image_variance(boot)
    return combine(value, 0.0, math.inf, V, 1, IMAGES_ONLY).within(*AP_RANGE)


def one_seed_difference(value: float, boot_diff: np.ndarray, n: int = 1) -> Interval:
    """A difference with one seed on a side: the percentile interval of the paired resampled
    differences (the bias cancels)."""
    lo, hi, sd = percentiles(boot_diff, LEVEL)
    return Interval(value, lo, hi, n, sd, math.inf, IMAGES_ONLY, 0.0, sd * sd)


def setting_interval(values: Sequence[float], boot: np.ndarray, seed_var_per_run: float, seed_df: float,
                     model: str) -> Interval:
    """A setting's seed-mean AP: values (n,) the seeds' APs, boot (n, R) their resampled
    APs; seed_var_per_run: one run's seed variance (moderation.py), with its df."""
    values = np.asarray(values, float)
    n = len(values)
    if n == 1:
        return one_seed_setting(float(values[0]), boot)
    _, C = run_image_variance(boot)
    return combine(float(values.mean()), seed_var_per_run / n, seed_df, C, n, model).within(*AP_RANGE)


def paired_difference(a: Sequence[float], a_boot: np.ndarray, b: Sequence[float], b_boot: np.ndarray,
                      seed_var_per_pair: float, seed_df: float, model: str) -> Interval:
    """mean(b - a) over seeds both ran, rows aligned by seed: seed_var_per_pair is one seed's
    difference variance (moderation.py), the image term C of the seed-wise resampled
    differences."""
    d = np.asarray(b, float) - np.asarray(a, float)
    _, C = run_image_variance(np.atleast_2d(b_boot) - np.atleast_2d(a_boot))
    n = len(d)
    return combine(float(d.mean()), seed_var_per_pair / n, seed_df, C, n, PAIRED + model)


def unpaired_difference(a: Sequence[float], a_boot: np.ndarray, b: Sequence[float], b_boot: np.ndarray,
                        a_seed: Tuple[float, float], b_seed: Tuple[float, float], model: str) -> Interval:
    """mean(b) - mean(a) of settings without two seeds in common: each side's (seed
    variance per run, df), Welch; the image term is the bootstrap variance of the
    difference less each side's own image noise, (V - C) / n."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a_boot, b_boot = np.atleast_2d(a_boot), np.atleast_2d(b_boot)
    na, nb = len(a), len(b)
    Va, Ca = run_image_variance(a_boot)
    Vb, Cb = run_image_variance(b_boot)
    image = max(0.0, bootstrap_var(b_boot.mean(axis=0) - a_boot.mean(axis=0)) - (Vb - Cb) / nb - (Va - Ca) / na)
    seed_var, seed_df = welch([(a_seed[0] / na, a_seed[1]), (b_seed[0] / nb, b_seed[1])])
    return combine(float(b.mean() - a.mean()), seed_var, seed_df, image, min(na, nb), model)
