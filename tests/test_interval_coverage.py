"""The interval model (frn_det/evaluation/intervals.py) against known truth: coverage by
simulation, the pooling check, the power formulas and the convergence rule."""
import json
import math

import numpy as np
import pytest

from frn_det.evaluation.intervals import (
    IMAGES_ONLY,
    PAIRED_PER_PAIR,
    PAIRED_POOLED,
    PER_SETTING,
    POOLED,
    Interval,
    _t_quantile_series,
    bartlett_p,
    chi2_sf,
    difference_interval,
    seed_variance,
    seeds_needed,
    setting_interval,
    t_two_sided,
)
from frn_det.report.convergence import loss_trend
from frn_det.report.coverage import Scenario, simulate

REPS = 2000  # coverage standard error ~0.5%: 93-97% is +-4 of them


@pytest.mark.parametrize("n", [3, 5])
def test_nominal_95_intervals_cover_the_truth_93_to_97_percent(n):
    cov = simulate(n, REPS, Scenario(), seed=n)
    print(f"n={n}: difference {cov['difference']:.3f}, setting {cov['setting']:.3f}, pooled {cov['pooled']:.3f}")
    assert 0.93 <= cov["difference"] <= 0.97
    assert 0.93 <= cov["setting"] <= 0.97
    assert cov["pooled"] > 0.9  # equal seed variances: Bartlett lets them pool ~95% of the time


def test_one_seed_image_only_intervals_miss_the_training_noise():
    cov = simulate(1, REPS, Scenario(), seed=1)
    print(f"n=1 (images only): difference {cov['difference']:.3f}, setting {cov['setting']:.3f}")
    assert cov["pooled"] == 0  # nothing to pool with one seed
    assert cov["difference"] < 0.85 and cov["setting"] < 0.93  # why one seed gets no `*`


def test_more_seeds_give_narrower_intervals():
    widths = [simulate(n, 300, Scenario(), seed=7)["width"] for n in (3, 5)]
    assert widths[1] < widths[0]


def test_t_and_chi2_quantiles():
    assert t_two_sided(0.95, 2) == pytest.approx(4.303, abs=1e-3)
    assert t_two_sided(0.95, 12) == pytest.approx(2.179, abs=1e-3)
    assert t_two_sided(0.95, math.inf) == pytest.approx(1.960, abs=1e-3)
    for x, k in ((3.841, 1), (5.991, 2), (7.815, 3), (9.488, 4), (11.070, 5)):  # chi2 0.95 quantiles
        assert chi2_sf(x, k) == pytest.approx(0.05, abs=2e-4)


def test_t_quantile_series_is_exact():
    """The no-scipy path: the finite series (and Cornish-Fisher beyond df 300) against the
    closed form for df 2 and a numerical integral of the t density."""
    exact = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))  # df=2: P(|T| <= t) = t / sqrt(2 + t^2)
    assert _t_quantile_series(0.95, 2) == pytest.approx(exact, abs=1e-12)
    assert t_two_sided(0.95, 2) == pytest.approx(4.302652729911275, abs=1e-9)  # scipy's value
    assert _t_quantile_series(0.95, 1) == pytest.approx(12.706204736174698, abs=1e-9)
    for df in (1, 2, 3, 4, 7, 30, 299, 301, 5000):
        for level in (0.9, 0.95, 0.99):
            q = _t_quantile_series(level, df)
            # independent check: integrate the t density over [-q, q] (Simpson)
            x = np.linspace(0.0, q, 20001)
            logc = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
            pdf = np.exp(logc - (df + 1) / 2 * np.log1p(x**2 / df))
            mass = 2 * (x[1] - x[0]) / 3 * (pdf[0] + pdf[-1] + 4 * pdf[1:-1:2].sum() + 2 * pdf[2:-1:2].sum())
            assert mass == pytest.approx(level, abs=1e-9), (df, level)


def test_bartlett_rejects_5_percent_of_equal_variances_and_most_unequal_ones():
    rng = np.random.default_rng(0)
    equal = [bartlett_p(rng.standard_normal((6, 3)).var(axis=1, ddof=1), [2] * 6) for _ in range(2000)]
    assert 0.035 < np.mean(np.array(equal) < 0.05) < 0.065
    scaled = np.array([1, 1, 1, 1, 1, 10.0])[:, None]
    unequal = [bartlett_p((scaled * rng.standard_normal((6, 5))).var(axis=1, ddof=1), [4] * 6) for _ in range(500)]
    assert np.mean(np.array(unequal) < 0.05) > 0.9


def test_pooled_variance_is_the_one_way_and_two_way_anova_residual():
    rng = np.random.default_rng(1)
    ap = rng.normal(30, 1, (4, 3)) + np.array([0.0, 2.0, -1.0])  # 4 settings x 3 seeds, seed effects
    sv = seed_variance({g: list(zip([0, 1, 2], ap[g])) for g in range(4)})
    assert sv.df == 8 and sv.settings == 4
    assert sv.variance == pytest.approx(ap.var(axis=1, ddof=1).mean())
    resid = ap - ap.mean(axis=1, keepdims=True) - ap.mean(axis=0, keepdims=True) + ap.mean()
    assert sv.paired_df == 6 and sv.paired_variance == pytest.approx((resid ** 2).sum() / 6)
    # Unequal seed sets: those settings stay out of the paired fit but still pool.
    sv = seed_variance({0: [(0, 1.0), (1, 2.0)], 1: [(None, 3.0), (None, 5.0)], 2: [(7, 1.0)]})
    assert sv.df == 2 and sv.settings == 2 and sv.variance == pytest.approx((0.5 + 2.0) / 2)
    assert sv.paired_df == 0 and math.isnan(sv.paired_variance)


def _boot(ap, rng, sd=0.3, R=400):
    return np.asarray(ap)[:, None] + sd * rng.standard_normal((len(ap), R))


def test_models_pooled_paired_per_setting_and_images_only():
    rng = np.random.default_rng(2)
    a, b = np.array([30.0, 31.0, 29.5]), np.array([31.0, 32.5, 30.0])
    homogeneous = seed_variance({0: list(zip(range(3), a)), 1: list(zip(range(3), b)),
                                 2: list(zip(range(3), a + 0.3))})
    assert homogeneous.pooled
    ab, bb = _boot(a, rng), _boot(b, rng)
    paired = difference_interval(a, ab, b, bb, homogeneous, [0, 1, 2], [0, 1, 2])
    assert paired.model == PAIRED_POOLED and paired.df >= homogeneous.paired_df and paired.value == pytest.approx(1.0)
    assert difference_interval(a, ab, b, bb, homogeneous, [0, 1, 2], [3, 4, 5]).model == POOLED
    assert setting_interval(a, ab, homogeneous).model == POOLED
    unequal = seed_variance({0: list(zip(range(3), a)), 1: list(zip(range(3), [10.0, 30.0, 50.0])),
                             2: list(zip(range(3), [1.0, 1.001, 1.002]))})
    assert not unequal.pooled and unequal.bartlett_p < 0.05
    assert difference_interval(a, ab, b, bb, unequal, [0, 1, 2], [0, 1, 2]).model == PAIRED_PER_PAIR
    own = difference_interval(a, ab, b, bb, unequal, [0, 1, 2], [3, 4, 5])
    assert own.model == PER_SETTING and own.df < 4  # Welch-Satterthwaite, two seed terms of df 2
    one = difference_interval(a[:1], ab[:1], b, bb, homogeneous, [0], [0, 1, 2])
    assert one.model == IMAGES_ONLY and not one.training_noise and not one.significant
    assert setting_interval(a[:1], ab[:1], homogeneous).model == IMAGES_ONLY


def test_a_one_seed_interval_that_excludes_zero_is_not_significant():
    iv = Interval(2.0, 1.0, 3.0, 1, 0.5, math.inf, IMAGES_ONLY)
    assert iv.excludes_zero and not iv.significant
    assert Interval(2.0, 1.0, 3.0, 3, 0.5, 10, POOLED).significant


def test_minimum_detectable_difference_and_seeds_needed_formulas():
    iv = Interval(0.0, -1, 1, 3, se=0.2, df=math.inf, model=POOLED)
    assert iv.mdd == pytest.approx((1.95996 + 0.84162) * 0.2, rel=1e-4)
    iv12 = Interval(0.0, -1, 1, 3, se=0.2, df=12, model=POOLED)
    assert iv12.mdd == pytest.approx((2.1788 + 0.8726) * 0.2, rel=1e-3)
    # seeds_needed: the smallest n that reaches the effect, for var 2 per seed pair, pooled over 6 settings.
    df_of = lambda n: 6 * (n - 1)  # noqa: E731
    n = seeds_needed(0.5, 2.0, 0.01, df_of)

    def crit(k):
        return (t_two_sided(0.95, df_of(k)) + t_two_sided(0.6, df_of(k))) * math.sqrt(2.0 / k + 0.01)

    assert crit(n) <= 0.5 < crit(n - 1)
    assert seeds_needed(1.0, 2.0, 0.01, df_of) < n  # a bigger effect needs fewer seeds
    assert seeds_needed(0.5, 2.0, 0.05, df_of) is None  # test images alone: 2.8 x 0.22 > 0.5


def _log(path, losses, every=20):
    path.write_text("".join(json.dumps({"iteration": every * (k + 1) - 1, "total_loss": v}) + "\n"
                            for k, v in enumerate(losses)))


def test_convergence_flags_a_loss_still_falling_and_not_a_flat_noisy_one(tmp_path):
    runs = []
    for seed in range(3):
        d = tmp_path / f"falling{seed}"
        d.mkdir()
        _log(d / "training_metrics.json", [2.0 * 0.9 ** k for k in range(15)])  # -10% per log step
        runs.append({"source": str(d / "metrics.json"), "scaling": {"max_iter": 300}})
    trend = loss_trend(runs)
    assert trend["still_falling"] and trend["drop"] == pytest.approx(1 - 0.9 ** 3, abs=0.01)
    flat = []
    rng = np.random.default_rng(0)
    for seed in range(3):
        d = tmp_path / f"flat{seed}"
        d.mkdir()
        _log(d / "training_metrics.json", list(1.0 + 0.1 * rng.standard_normal(15)))
        flat.append({"source": str(d / "metrics.json"), "scaling": {"max_iter": 300}})
    assert not loss_trend(flat)["still_falling"]
    assert loss_trend([{"source": str(tmp_path / "none" / "metrics.json")}]) is None  # no log
