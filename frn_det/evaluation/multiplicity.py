"""Family-wise error: a star survives the number of comparisons made (docs/intervals.md).

Single-step min-p (Westfall-Young, with the comparisons' own correlations and df): under the
joint null, T_k = Z_k / sqrt(W_k) with Z ~ N(0, R) (R: the differences' correlations; they
share baselines, seeds and test images) and W_k ~ chi^2(df_k) / df_k; p_k is T_k's two-sided
p at its own df. The family's level alpha* is the LEVEL-complement quantile of min_k p_k: a
comparison is starred when its own p <= alpha*, i.e. when its simultaneous interval, value
+- t(df_k, 1 - alpha*/2) x SE_k, excludes 0. With p rather than t, a member with few df (an
erratic setting's) does not widen everyone's intervals. With one comparison alpha* = 1 -
LEVEL. The draws use a fixed seed: the same sweep gives the same report.
"""
import math
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
from scipy import special

from .intervals import LEVEL, NORMAL_DF, t_quantile, t_two_sided_p

DRAWS = 20_000  # Monte Carlo draws of min p: alpha* to about 3% of itself
DRAW_SEED = 20200614  # fixed: the same sweep gives the same report


@dataclass(frozen=True)
class FamilyTest:
    alpha: float  # alpha*: the per-comparison level that keeps the family's error at 1 - LEVEL
    critical: List[float]  # per comparison: t(df_k, 1 - alpha*/2), its simultaneous interval's half-width / SE
    p_adjusted: np.ndarray  # per comparison: P(min p* <= p_k)


def nearest_correlation(cov: np.ndarray) -> np.ndarray:
    """A correlation matrix from a symmetric covariance estimate: eigenvalues clipped at 0,
    then rescaled to a unit diagonal."""
    cov = (cov + cov.T) / 2
    w, v = np.linalg.eigh(cov)
    psd = (v * np.clip(w, 0, None)) @ v.T
    d = np.sqrt(np.clip(np.diag(psd), 1e-300, None))
    corr = psd / np.outer(d, d)
    np.fill_diagonal(corr, 1.0)
    return corr


def _two_sided_p(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """P(|T_df| >= |t|) elementwise, df floored as the intervals' quantiles; normal when huge."""
    normal = ~np.isfinite(df) | (df > NORMAL_DF)
    d = np.where(normal, 1.0, np.floor(np.maximum(np.where(normal, 1.0, df), 1)))
    return np.where(normal, 2 * special.ndtr(-np.abs(t)), 2 * special.stdtr(d, -np.abs(t)))


COARSE_DF = np.array([30.0, 40.0, 60.0, 120.0])  # above 30 df the null draws use the next of these below


def coarse_df(df: np.ndarray) -> np.ndarray:
    """The df the null draws use: floored to an integer up to 30, then down to COARSE_DF
    (normal above NORMAL_DF, as the intervals): t barely changes there, the draws get few
    distinct df, and rounding df down only makes the family's level a little more cautious."""
    df = np.asarray(df, float)
    normal = ~np.isfinite(df) | (df > NORMAL_DF)
    floored = np.floor(np.maximum(np.where(normal, 1.0, df), 1))
    grid = COARSE_DF[np.clip(np.searchsorted(COARSE_DF, floored, side="right") - 1, 0, None)]
    return np.where(normal, np.inf, np.where(floored < COARSE_DF[0], floored, grid))


def min_p(t: Sequence[float], df: Sequence[float], corr: np.ndarray, level: float = LEVEL,
          draws: int = DRAWS, seed: int = DRAW_SEED) -> FamilyTest:
    """The family's level alpha*, each comparison's critical value and adjusted p; t: the
    comparisons' value / SE, df: their df."""
    t, df = np.abs(np.asarray(t, float)), np.asarray(df, float)
    k = len(t)
    if k == 0:
        return FamilyTest(math.nan, [], np.zeros(0))
    p = np.array([t_two_sided_p(x, d) for x, d in zip(t, df)])
    if k == 1:
        return FamilyTest(1 - level, [t_quantile(0.5 + level / 2, df[0])], p)
    rng = np.random.default_rng(seed)
    w, v = np.linalg.eigh(nearest_correlation(np.asarray(corr, float)))
    z = rng.standard_normal((draws, k)) @ (v * np.sqrt(np.clip(w, 0, None))).T
    coarse = coarse_df(df)
    finite = np.isfinite(coarse)
    if finite.any():
        d = coarse[finite]
        z[:, finite] /= np.sqrt(rng.chisquare(d, size=(draws, int(finite.sum()))) / d)
    # min over k of p_k: the largest |T| of each distinct df, then its p
    smallest = np.ones(draws)
    for value in np.unique(coarse):
        largest = np.abs(z[:, coarse == value]).max(axis=1)
        smallest = np.minimum(smallest, _two_sided_p(largest, np.full(draws, value)))
    smallest.sort()
    pos = (1 - level) * (draws - 1)  # np.quantile's linear rule, on the sorted draws
    alpha = float(smallest[int(pos)] + (pos - int(pos)) * (smallest[int(pos) + 1] - smallest[int(pos)]))
    adjusted = np.searchsorted(smallest, p, side="right") / draws
    return FamilyTest(alpha, [t_quantile(1 - alpha / 2, d) for d in df], np.clip(adjusted, 1 / draws, 1.0))
