"""Sequential (always-valid) intervals and p-values against gbstats 0.8.0 `SequentialTwoSidedTTest`.

The formulas coincide exactly (same variance, N = n_control + n_variant, same rho from the tuning
parameter), so agreement is to floating-point precision. gbstats' default difference type is
relative; our p-value tests the absolute difference, so both types are compared explicitly.
"""

import math
import random

import pytest
from gbstats.frequentist.tests import SequentialConfig, SequentialTwoSidedTTest
from gbstats.models.statistics import ProportionStatistic, SampleMeanStatistic

from query_api.stats.frequentist import two_proportion_z_test
from query_api.stats.models import ProportionStats, SampleMeanStats
from query_api.stats.sequential import mixture_rho, sequential_test

from . import references

# gbstats computes the e-value without logs and overflows (to p = 0, like ours) for huge effects.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")


def _cases(seed):
    rng = random.Random(seed)
    for _ in range(40):
        na, nb = rng.randint(50, 300000), rng.randint(50, 300000)
        p = rng.choice([0.01, 0.05, 0.2, rng.uniform(0.01, 0.9)])
        ca = max(1, min(na - 1, round(rng.gauss(na * p, math.sqrt(na * p) + 1))))
        cb = max(1, min(nb - 1, round(rng.gauss(nb * p * rng.uniform(0.9, 1.15), math.sqrt(nb * p) + 1))))
        planned = rng.choice([1000, 5000, 20000, 1e6])
        yield na, ca, nb, cb, planned


def _gbstats(stat_a, stat_b, kind, confidence, planned):
    config = SequentialConfig(difference_type=kind, alpha=1 - confidence, sequential_tuning_parameter=planned)
    return SequentialTwoSidedTTest(stat_a, stat_b, config).compute_result()


@pytest.mark.parametrize("confidence", [0.90, 0.95, 0.99])
def test_proportions_match_gbstats(confidence):
    for na, ca, nb, cb, planned in _cases(1):
        ours = sequential_test(ProportionStats(na, ca), ProportionStats(nb, cb), confidence, planned)
        a, b = ProportionStatistic(n=na, sum=ca), ProportionStatistic(n=nb, sum=cb)
        gb_abs = _gbstats(a, b, "absolute", confidence, planned)
        assert ours.p_value == pytest.approx(gb_abs.p_value, rel=1e-9, abs=1e-300)
        assert [ours.absolute.ci_low, ours.absolute.ci_high] == pytest.approx(gb_abs.ci, rel=1e-9, abs=1e-12)
        _assert_fieller(ours, gb_abs, ca / na, ca / na * (1 - ca / na) / na, cb / nb, cb / nb * (1 - cb / nb) / nb)


def _assert_fieller(ours, gb_abs, mean_a, var_a, mean_b, var_b):
    """Relative lift: Fieller's interval with gbstats' own boundary multiplier (half width / SE)."""
    multiplier = (gb_abs.ci[1] - gb_abs.expected) / math.sqrt(var_a + var_b)
    low, high = references.fieller(mean_a, var_a, mean_b, var_b, multiplier)
    if low is None:
        assert ours.relative.ci_low is None
    else:
        assert [ours.relative.ci_low, ours.relative.ci_high] == pytest.approx([low - 1, high - 1], rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("confidence", [0.90, 0.95, 0.99])
def test_sample_means_match_gbstats(confidence):
    rng = random.Random(2)
    for na, _, nb, _, planned in _cases(3):
        ma, mb = rng.uniform(0.5, 5), rng.uniform(0.5, 5)
        va, vb = rng.uniform(1, 50), rng.uniform(1, 50)
        sa, ssa = ma * na, va * (na - 1) + ma * ma * na
        sb, ssb = mb * nb, vb * (nb - 1) + mb * mb * nb
        ours = sequential_test(SampleMeanStats(na, sa, ssa), SampleMeanStats(nb, sb, ssb), confidence, planned)
        a = SampleMeanStatistic(n=na, sum=sa, sum_squares=ssa)
        b = SampleMeanStatistic(n=nb, sum=sb, sum_squares=ssb)
        gb_abs = _gbstats(a, b, "absolute", confidence, planned)
        assert ours.p_value == pytest.approx(gb_abs.p_value, rel=1e-9, abs=1e-300)
        assert [ours.absolute.ci_low, ours.absolute.ci_high] == pytest.approx(gb_abs.ci, rel=1e-9, abs=1e-12)
        _assert_fieller(ours, gb_abs, ma, va / na, mb, vb / nb)


def test_p_value_agrees_with_interval_and_is_wider_than_fixed_horizon():
    for na, ca, nb, cb, planned in _cases(4):
        for confidence in (0.90, 0.95, 0.99):
            seq = sequential_test(ProportionStats(na, ca), ProportionStats(nb, cb), confidence, planned)
            excludes_zero = seq.absolute.ci_low > 0 or seq.absolute.ci_high < 0
            assert (seq.p_value < 1 - confidence) == excludes_zero
            fixed = two_proportion_z_test(ProportionStats(na, ca), ProportionStats(nb, cb), confidence)
            assert seq.absolute.ci_high - seq.absolute.ci_low > fixed.absolute.ci_high - fixed.absolute.ci_low


def test_rho_formula():
    # eq. 161 of Waudby-Smith et al.; same value gbstats computes
    alpha = 0.05
    expected = math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / 5000)
    assert mixture_rho(alpha, 5000) == pytest.approx(expected, rel=1e-15)


def test_huge_effect_does_not_overflow():
    result = sequential_test(ProportionStats(10**7, 10**5), ProportionStats(10**7, 3 * 10**5), 0.95, 5000)
    assert result.p_value == 0.0


def test_degenerate_inputs():
    assert sequential_test(ProportionStats(0, 0), ProportionStats(10, 1), 0.95).p_value is None
    flat = sequential_test(ProportionStats(100, 0), ProportionStats(100, 0), 0.95)
    assert flat.p_value is None and flat.absolute.ci_low is None and flat.messages
    one = sequential_test(SampleMeanStats(1, 1.0, 1.0), SampleMeanStats(10, 3.0, 5.0), 0.95)
    assert one.p_value is None and one.messages
