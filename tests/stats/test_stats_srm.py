"""Sample ratio mismatch check against scipy.stats.chisquare and gbstats' check_srm."""

import random

import pytest
from gbstats.utils import check_srm
from scipy import stats

from query_api.stats.models import ProportionStats, SampleMeanStats, VariantInput
from query_api.stats.srm import SRM_MIN_SESSIONS, sample_ratio_mismatch


def _variants(sessions, allocations):
    return [
        VariantInput(f"v{i}", i == 0, allocation, ProportionStats(n, 0), SampleMeanStats(n, 0.0, 0.0))
        for i, (n, allocation) in enumerate(zip(sessions, allocations))
    ]


def _random_cases():
    rng = random.Random(17)
    cases = [([5000, 5000], [50, 50]), ([5100, 4900], [50, 50]), ([1000, 2100, 950], [25, 50, 25]), ([3, 9], [50, 50])]
    for _ in range(50):
        k = rng.randint(2, 6)
        allocations = [rng.randint(1, 60) for _ in range(k)]
        total = rng.randint(10, 10**6)
        sessions = [max(0, round(total * a / sum(allocations) * rng.uniform(0.97, 1.03))) for a in allocations]
        cases.append((sessions, allocations))
    return cases


def test_against_scipy_and_gbstats():
    for sessions, allocations in _random_cases():
        result = sample_ratio_mismatch(_variants(sessions, allocations))
        total = sum(sessions)
        expected = [a / sum(allocations) * total for a in allocations]
        ref = stats.chisquare(sessions, expected)
        assert result["chi_square"] == pytest.approx(ref.statistic, rel=1e-10, abs=1e-12)
        assert result["p_value"] == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)
        assert result["p_value"] == pytest.approx(check_srm(sessions, allocations), rel=1e-8, abs=1e-300)
        assert result["df"] == len(sessions) - 1
        assert result["flagged"] == (ref.pvalue < 0.001 and total >= SRM_MIN_SESSIONS)


def test_zero_allocation_variants_are_left_out():
    result = sample_ratio_mismatch(_variants([5000, 5080, 0], [50, 50, 0]))
    ref = stats.chisquare([5000, 5080])
    assert result["df"] == 1 and result["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert result["excluded_variants"] == ["v2"]
    assert result["message"] is None
    stray = sample_ratio_mismatch(_variants([5000, 5080, 12], [50, 50, 0]))
    assert stray["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert "12 exposed session(s)" in stray["message"]


def test_flagging_rules():
    flagged = sample_ratio_mismatch(_variants([5000, 4500], [50, 50]))
    assert flagged["flagged"] and flagged["p_value"] < 1e-6 and "mismatch" in flagged["message"]
    tiny = sample_ratio_mismatch(_variants([40, 5], [50, 50]))  # p < 0.001 but only 45 sessions
    assert tiny["p_value"] < 0.001 and not tiny["flagged"] and "Too few" in tiny["message"]
    fine = sample_ratio_mismatch(_variants([5000, 5010], [50, 50]))
    assert not fine["flagged"] and fine["message"] is None


def test_degenerate_inputs():
    nothing = sample_ratio_mismatch(_variants([0, 0], [50, 50]))
    assert nothing["p_value"] is None and not nothing["flagged"] and nothing["message"]
    single = sample_ratio_mismatch(_variants([100, 30], [100, 0]))
    assert single["p_value"] is None and "Fewer than two" in single["message"]
    assert sample_ratio_mismatch([])["p_value"] is None
