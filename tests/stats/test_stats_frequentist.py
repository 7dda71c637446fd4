"""Fixed-horizon tests against scipy, statsmodels and gbstats 0.8.0.

Reference mapping:
* z-test p-value (pooled SE)  == statsmodels `proportions_ztest` == scipy `chi2_contingency(correction=False)`
* conversion-rate CI of the difference (score, inverting the pooled z-test) == an independent scipy
  brentq inversion of Mee's score statistic (references.py), and statsmodels
  `confint_proportions_2indep(method="score", correction=False)` where its closed-form cubic holds
* relative-lift CI == statsmodels' score interval of the ratio, minus 1
* Welch t-test == scipy `ttest_ind_from_stats(equal_var=False)` / `ttest_ind(...).confidence_interval`
  == gbstats `TwoSidedTTest` with `SampleMeanStatistic` (absolute); relative == Fieller (numpy roots)
"""

import math
import random

import numpy as np
import pytest
from gbstats.frequentist.tests import FrequentistConfig, TwoSidedTTest
from gbstats.models.statistics import SampleMeanStatistic
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
    score_test_proportions_2indep,
)

from query_api.stats.frequentist import holm_adjust, two_proportion_z_test, welch_t_test, wilson_interval
from query_api.stats.models import ProportionStats, SampleMeanStats

from . import references

TOL = 1e-9


def _proportion_cases():
    fixed = [(1000, 100, 1000, 120), (5000, 50, 4800, 71), (200, 30, 230, 30), (10, 3, 12, 9), (80000, 2400, 81000, 2600)]
    rng = random.Random(42)
    rand = []
    for _ in range(60):
        na, nb = rng.randint(20, 200000), rng.randint(20, 200000)
        p = rng.choice([0.005, 0.03, 0.1, 0.4, rng.random()])
        ca = min(na - 1, max(1, round(rng.gauss(p * na, math.sqrt(na * p * (1 - p)) + 1))))
        cb = min(nb - 1, max(1, round(rng.gauss(p * 1.05 * nb, math.sqrt(nb * p * (1 - p)) + 1))))
        rand.append((na, ca, nb, cb))
    return fixed + rand


@pytest.mark.parametrize("confidence", [0.90, 0.95, 0.99])
def test_two_proportion_z_test_against_statsmodels_and_scipy(confidence):
    alpha = 1 - confidence
    for na, ca, nb, cb in _proportion_cases():
        result = two_proportion_z_test(ProportionStats(na, ca), ProportionStats(nb, cb), confidence)
        z, p = proportions_ztest([cb, ca], [nb, na])  # pooled SE by default
        assert result.statistic == pytest.approx(z, rel=1e-10)
        assert result.p_value == pytest.approx(p, rel=1e-8, abs=1e-14)
        chi2_p = stats.chi2_contingency([[ca, na - ca], [cb, nb - cb]], correction=False)[1]
        assert result.p_value == pytest.approx(chi2_p, rel=1e-7, abs=1e-14)
        low, high = references.score_interval_difference(ca, na, cb, nb, stats.norm.ppf(1 - alpha / 2))
        assert result.absolute.estimate == pytest.approx(cb / nb - ca / na, abs=1e-15)
        assert result.absolute.ci_low == pytest.approx(low, abs=1e-10)
        assert result.absolute.ci_high == pytest.approx(high, abs=1e-10)
        # the interval inverts the test: it excludes 0 exactly when p < alpha
        assert (result.absolute.ci_low > 0 or result.absolute.ci_high < 0) == (result.p_value < alpha)
        assert (result.relative.ci_low > 0 or result.relative.ci_high < 0) == (result.p_value < alpha)


@pytest.mark.parametrize("confidence", [0.90, 0.95, 0.99])
def test_score_intervals_match_statsmodels(confidence):
    for na, ca, nb, cb in _proportion_cases()[:25]:
        ours = two_proportion_z_test(ProportionStats(na, ca), ProportionStats(nb, cb), confidence)
        ratio = confint_proportions_2indep(
            cb, nb, ca, na, method="score", compare="ratio", alpha=1 - confidence, correction=False
        )
        assert ours.relative.estimate == pytest.approx((cb / nb) / (ca / na) - 1, rel=1e-12)
        assert [ours.relative.ci_low + 1, ours.relative.ci_high + 1] == pytest.approx(list(ratio), rel=1e-7)
    for na, ca, nb, cb in [(1000, 100, 1000, 120), (5000, 50, 4800, 71), (200, 30, 230, 30), (10, 3, 12, 9)]:
        ours = two_proportion_z_test(ProportionStats(na, ca), ProportionStats(nb, cb), confidence)
        # statsmodels' closed-form score interval is off by ~1e-4 here (its cubic root loses digits;
        # the scipy inversion in test_two_proportion_z_test_... is the reference). At 0 its score
        # test is the pooled z-test, which is what makes our interval agree with our p-value.
        test = score_test_proportions_2indep(cb, nb, ca, na, value=0, compare="diff", correction=False)
        assert ours.statistic == pytest.approx(test.statistic, rel=1e-10)


@pytest.mark.parametrize(
    "counts",
    [(375, 13, 573, 8), (183, 6, 27554, 1850), (150, 6, 150, 1), (100, 0, 100, 3), (100, 4, 100, 0), (60, 60, 50, 20)],
)
def test_issue_cases_verdict_interval_and_relative_bound(counts):
    """The issue's disagreements: the shown interval and the test now agree; relative lift stays above -100 %."""
    na, ca, nb, cb = counts
    result = two_proportion_z_test(ProportionStats(na, ca), ProportionStats(nb, cb), 0.95)
    excludes_zero = result.absolute.ci_low > 0 or result.absolute.ci_high < 0
    assert excludes_zero == (result.p_value < 0.05)
    assert -1.0 <= result.absolute.ci_low <= result.absolute.estimate <= result.absolute.ci_high <= 1.0
    if ca > 0:
        assert result.relative.ci_low >= -1.0
        assert result.relative.ci_high is None or result.relative.ci_high >= result.relative.estimate


def test_z_test_degenerate_inputs_are_none_not_errors():
    empty = two_proportion_z_test(ProportionStats(0, 0), ProportionStats(100, 3), 0.95)
    assert empty.p_value is None and empty.absolute.estimate is None and empty.messages
    none_converted = two_proportion_z_test(ProportionStats(500, 0), ProportionStats(400, 0), 0.95)
    assert none_converted.p_value is None
    assert none_converted.absolute.estimate == 0 and none_converted.absolute.ci_low is None
    assert none_converted.relative.estimate is None
    assert any("converted" in m for m in none_converted.messages)
    extreme = two_proportion_z_test(ProportionStats(500, 0), ProportionStats(400, 400), 0.95)
    assert extreme.p_value is not None and extreme.p_value < 1e-100
    assert 0.98 < extreme.absolute.ci_low < extreme.absolute.ci_high == 1.0  # the score interval stays defined
    control_zero = two_proportion_z_test(ProportionStats(500, 0), ProportionStats(400, 9), 0.95)
    assert control_zero.relative.estimate is None and control_zero.absolute.ci_low is not None


def _mean_stats(values):
    values = np.asarray(values, dtype=float)
    return SampleMeanStats(len(values), float(values.sum()), float((values**2).sum()))


def _value_samples(rng, n, conversion_rate, mean_value):
    converted = rng.random(n) < conversion_rate
    return np.where(converted, rng.lognormal(math.log(mean_value), 1.0, n), 0.0)


@pytest.mark.parametrize("confidence", [0.90, 0.95, 0.99])
def test_welch_against_scipy_raw_data(confidence):
    rng = np.random.default_rng(5)
    for _ in range(25):
        a = _value_samples(rng, int(rng.integers(2, 3000)), rng.uniform(0.02, 0.5), 30)
        b = _value_samples(rng, int(rng.integers(2, 3000)), rng.uniform(0.02, 0.5), 33)
        if a.var() == 0 and b.var() == 0:
            continue
        ours = welch_t_test(_mean_stats(a), _mean_stats(b), confidence)
        ref = stats.ttest_ind(b, a, equal_var=False)
        assert ours.statistic == pytest.approx(ref.statistic, rel=1e-7)
        assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-6, abs=TOL)
        assert ours.df == pytest.approx(ref.df, rel=1e-7)
        ci = ref.confidence_interval(confidence)
        assert ours.absolute.ci_low == pytest.approx(ci.low, rel=1e-7, abs=TOL)
        assert ours.absolute.ci_high == pytest.approx(ci.high, rel=1e-7, abs=TOL)


@pytest.mark.parametrize("confidence", [0.90, 0.95, 0.99])
def test_welch_against_gbstats(confidence):
    rng = random.Random(99)
    cases = [(1000, 2500.0, 90000.0, 1100, 3100.0, 120000.0), (40, 10.0, 30.0, 35, 14.0, 60.0)]
    for _ in range(40):
        na, nb = rng.randint(3, 100000), rng.randint(3, 100000)
        ma, mb = rng.uniform(0.1, 20), rng.uniform(0.1, 20)
        va, vb = rng.uniform(0.5, 400), rng.uniform(0.5, 400)
        cases.append((na, ma * na, va * (na - 1) + ma * ma * na, nb, mb * nb, vb * (nb - 1) + mb * mb * nb))
    for na, sa, ssa, nb, sb, ssb in cases:
        ours = welch_t_test(SampleMeanStats(na, sa, ssa), SampleMeanStats(nb, sb, ssb), confidence)
        ref = stats.ttest_ind_from_stats(
            sb / nb,
            math.sqrt((ssb - sb * sb / nb) / (nb - 1)),
            nb,
            sa / na,
            math.sqrt((ssa - sa * sa / na) / (na - 1)),
            na,
            equal_var=False,
        )
        assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-6, abs=TOL)
        q = stats.t.ppf(0.5 + confidence / 2, ours.df)
        low, high = references.fieller(sa / na, ours_var(ssa, sa, na), sb / nb, ours_var(ssb, sb, nb), q)
        assert ours.relative.estimate == pytest.approx((sb / nb) / (sa / na) - 1, rel=1e-10)
        if low is None:
            assert ours.relative.ci_low is None and ours.relative.ci_high is None
        else:
            assert [ours.relative.ci_low, ours.relative.ci_high] == pytest.approx([low - 1, high - 1], rel=1e-7, abs=TOL)
        for kind, estimate in (("absolute", ours.absolute),):
            gb = TwoSidedTTest(
                SampleMeanStatistic(n=na, sum=sa, sum_squares=ssa),
                SampleMeanStatistic(n=nb, sum=sb, sum_squares=ssb),
                FrequentistConfig(difference_type=kind, alpha=1 - confidence),
            ).compute_result()
            assert estimate.estimate == pytest.approx(gb.expected, rel=1e-10)
            assert estimate.ci_low == pytest.approx(gb.ci[0], rel=1e-7, abs=TOL)
            assert estimate.ci_high == pytest.approx(gb.ci[1], rel=1e-7, abs=TOL)
            if kind == "absolute":
                assert ours.p_value == pytest.approx(gb.p_value, rel=1e-6, abs=TOL)


def ours_var(sum_squares, total, n):
    return (sum_squares - total * total / n) / (n - 1) / n


def test_welch_degenerate_inputs():
    too_small = welch_t_test(SampleMeanStats(1, 5.0, 25.0), SampleMeanStats(50, 10.0, 40.0), 0.95)
    assert too_small.p_value is None and too_small.messages
    flat = welch_t_test(SampleMeanStats(100, 0.0, 0.0), SampleMeanStats(100, 0.0, 0.0), 0.95)
    assert flat.p_value is None and flat.absolute.estimate == 0 and flat.relative.estimate is None
    assert any("zero variance" in m for m in flat.messages)
    one_sided_variance = welch_t_test(SampleMeanStats(100, 0.0, 0.0), SampleMeanStats(100, 50.0, 400.0), 0.95)
    assert one_sided_variance.p_value is not None and one_sided_variance.df == pytest.approx(99)


def test_holm_against_statsmodels():
    # statsmodels' multipletests runs gc.collect() on every call (slow inside pytest): few calls.
    rng = random.Random(3)
    cases = [[rng.random() ** 3 for _ in range(m)] for m in (1, 2, 3, 5, 8)] + [[0.01, 0.01, 0.04, 0.03, 0.9]]
    for p in cases:
        expected = multipletests(p, method="holm")[1]
        assert holm_adjust(p) == pytest.approx(list(expected), abs=1e-15)
    assert holm_adjust([0.01, None, 0.04]) == [pytest.approx(0.02), None, pytest.approx(0.04)]
    assert holm_adjust([]) == []


@pytest.mark.parametrize("confidence", [0.90, 0.95, 0.99])
def test_wilson_against_statsmodels(confidence):
    for converted, n in [(0, 1), (0, 50), (1, 50), (25, 50), (50, 50), (37, 1234), (12345, 99999)]:
        rate, low, high = wilson_interval(converted, n, confidence)
        ref_low, ref_high = proportion_confint(converted, n, alpha=1 - confidence, method="wilson")
        assert rate == converted / n
        assert low == pytest.approx(ref_low, abs=TOL)
        assert high == pytest.approx(ref_high, abs=TOL)
