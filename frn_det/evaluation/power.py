"""Power of a comparison, and the seeds a design needs (docs/intervals.md).

Exact power from the noncentral t: a true difference delta gives value / SE ~ t(df, delta /
SE), found when |t| exceeds the critical value the star uses (the family's q). The minimum
detectable difference (MDD) is the delta found with POWER. Seeds needed: the same variance
and df model as the interval, at n seeds per setting (the test images stay, so the image
term does not shrink), at the per-comparison level the family's q implies now.
"""
import math
from dataclasses import dataclass
from typing import Optional, Sequence

from scipy import optimize, special, stats

from .intervals import NORMAL_DF, interval_df, t_quantile, welch

POWER = 0.80
MAX_SEEDS = 1000  # seeds_needed answers None beyond this


def power(delta: float, se: float, df: float, critical: float) -> float:
    """P(|T| > critical) for T ~ noncentral t(df, delta / se); df floored as the intervals'."""
    nc = delta / se
    if not math.isfinite(df) or df > NORMAL_DF:
        return float(stats.norm.sf(critical - nc) + stats.norm.cdf(-critical - nc))
    df, nc = max(1, int(df)), abs(nc)
    wrong_side = float(special.nctdtr(df, nc, -critical))  # nan far in this tail: then 0
    return 1 - float(special.nctdtr(df, nc, critical)) + (wrong_side if math.isfinite(wrong_side) else 0.0)


def mdd(se: float, df: float, critical: float, target: float = POWER) -> float:
    """The true difference found with `target` power: power(mdd) = target."""
    if not (se > 0 and math.isfinite(se) and math.isfinite(critical)):
        return math.nan
    hi = (critical + 3) * se
    while power(hi, se, df, critical) < target:
        hi *= 2
    return float(optimize.brentq(lambda d: power(d, se, df, critical) - target, 0.0, hi, xtol=1e-9 * se))


@dataclass(frozen=True)
class SeedTerm:
    """One seed variance in a comparison: per_seed / n is its part of SE^2 at n seeds."""

    per_seed: float  # one run's (or one seed's difference) variance
    prior_df: float  # df borrowed from the sweep's prior (0: its own variance alone)
    cap_rate: float = math.inf  # the sweep's df per extra seed: df <= cap_rate x (n - 1)

    def df(self, n: int) -> float:
        return min(self.prior_df + (n - 1), self.cap_rate * (n - 1)) if n > 1 else math.nan


@dataclass(frozen=True)
class Design:
    """A comparison's design: its seed terms, its image variance and its test's level."""

    terms: Sequence[SeedTerm]
    image_var: float
    alpha: float  # two-sided per-comparison level of its family's test (multiplicity.min_p's alpha*)

    def se_df(self, n: int):
        seed_var, seed_df = welch([(t.per_seed / n, t.df(n)) for t in self.terms])
        return math.sqrt(seed_var + self.image_var), interval_df(seed_df, seed_var, self.image_var)

    def power(self, effect: float, n: int) -> float:
        se, df = self.se_df(n)
        return power(effect, se, df, t_quantile(1 - self.alpha / 2, df))

    def seeds_needed(self, effect: float) -> Optional[int]:
        """Smallest n per setting that finds `effect` with POWER; None when no n up to
        MAX_SEEDS does (the test-image variance alone is too large: more test images)."""
        if not (effect > 0 and self.alpha > 0 and math.isfinite(self.image_var)
                and all(math.isfinite(t.per_seed) for t in self.terms)):
            return None
        if self.power(effect, MAX_SEEDS) < POWER:
            return None
        lo, hi = 1, MAX_SEEDS  # power(hi) suffices; bisect the smallest such n
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self.power(effect, mid) >= POWER else (mid, hi)
        return hi
