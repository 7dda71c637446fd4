"""compare_metric dispatches each kind of sufficient statistics to its test; checked against
statsmodels / scipy and against the single-kind tests it wraps."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps
from statsmodels.stats.proportion import proportions_ztest
from statsmodels.stats.proportion import test_proportions_2indep as two_proportions_test

from query_api.stats.metric_tests import compare_metric
from query_api.stats.models import ProportionStats, SampleMeanStats
from query_api.stats.ratio import RatioStats, ratio_test

CONTROL_RATIO = RatioStats(2000, 820.0, 1500.0, 2010.0, 4100.0, 2300.0)
VARIANT_RATIO = RatioStats(2100, 960.0, 1800.0, 2080.0, 4300.0, 2600.0)


def test_binomial_is_the_pooled_z_test():
    test, control, variant = compare_metric(ProportionStats(3000, 300), ProportionStats(3100, 360), 0.95)
    assert test.p_value == pytest.approx(proportions_ztest([360, 300], [3100, 3000])[1], rel=1e-9)
    assert (control, variant) == (0.1, 360 / 3100)


def test_value_is_welch():
    control, variant = SampleMeanStats(500, 1000.0, 9000.0), SampleMeanStats(520, 1200.0, 11000.0)
    test, _, _ = compare_metric(control, variant, 0.95)
    sd = lambda s: math.sqrt((s.sum_squares - s.sum**2 / s.n) / (s.n - 1))  # noqa: E731
    expected = sps.ttest_ind_from_stats(
        variant.mean, sd(variant), variant.n, control.mean, sd(control), control.n, equal_var=False
    )
    assert test.p_value == pytest.approx(expected.pvalue, rel=1e-9)


def test_ratio_is_the_delta_method_and_one_stratum_gives_the_same_test():
    plain, control, variant = compare_metric(CONTROL_RATIO, VARIANT_RATIO, 0.95)
    assert plain.p_value == ratio_test(CONTROL_RATIO, VARIANT_RATIO, 0.95).p_value
    assert (control, variant) == (CONTROL_RATIO.mean, VARIANT_RATIO.mean)
    stratified, _, _ = compare_metric([CONTROL_RATIO], [VARIANT_RATIO], 0.95)
    assert stratified.p_value == pytest.approx(plain.p_value, rel=1e-12)
    assert stratified.absolute.ci_low == pytest.approx(plain.absolute.ci_low, rel=1e-12)


def test_one_stratum_of_proportions_is_the_unpooled_wald_test():
    test, _, _ = compare_metric([ProportionStats(3000, 300)], [ProportionStats(3100, 360)], 0.95)
    reference = two_proportions_test(360, 3100, 300, 3000, method="wald", compare="diff")
    assert test.p_value == pytest.approx(reference.pvalue, rel=1e-9)


def test_sequential_ratio_is_wider_than_fixed_and_still_agrees_with_its_p_value():
    fixed, _, _ = compare_metric(CONTROL_RATIO, VARIANT_RATIO, 0.95)
    sequential, _, _ = compare_metric(CONTROL_RATIO, VARIANT_RATIO, 0.95, sequential=True, planned_sessions=4100)
    assert sequential.absolute.ci_high - sequential.absolute.ci_low > fixed.absolute.ci_high - fixed.absolute.ci_low
    excludes_zero = sequential.absolute.ci_low > 0 or sequential.absolute.ci_high < 0
    assert excludes_zero == (sequential.p_value < 0.05)


def test_missing_statistics_are_a_message_not_an_error():
    test, control, variant = compare_metric(None, ProportionStats(10, 1), 0.95)
    assert test.p_value is None and test.messages and control is None and variant is None
