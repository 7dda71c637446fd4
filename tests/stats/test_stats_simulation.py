"""Operating characteristics by simulation (fixed seeds; numpy only generates the data).

Sufficient statistics are drawn directly (binomial counts; per-session values aggregated per group),
so thousands of experiments take well under a second. The functions called are the ones
`analyze_experiment` wires in (checked in test_stats_analysis.py).
"""

import math

import numpy as np
from scipy import stats

from query_api.stats import analyze_experiment
from query_api.stats.frequentist import holm_adjust, two_proportion_z_test, welch_t_test
from query_api.stats.models import ProportionStats, SampleMeanStats, VariantInput
from query_api.stats.sequential import sequential_test

ALPHA = 0.05


def _z_p_values(counts_a, counts_b, n):
    return [
        two_proportion_z_test(ProportionStats(n, int(a)), ProportionStats(n, int(b)), 0.95).p_value
        for a, b in zip(counts_a, counts_b)
    ]


def test_aa_false_positive_rate_fixed_horizon_conversion():
    rng = np.random.default_rng(2024)
    sims, n, rate = 20000, 5000, 0.05
    p = _z_p_values(rng.binomial(n, rate, sims), rng.binomial(n, rate, sims), n)
    false_positive_rate = np.mean(np.array(p) < ALPHA)
    assert 0.03 <= false_positive_rate <= 0.07, false_positive_rate
    # with 20000 runs the estimate's SE is 0.0015, so it should in fact be close to 0.05
    assert abs(false_positive_rate - ALPHA) < 0.006


def _value_stats(rng, sims, n, rate):
    """Per simulated group: SampleMeanStats of per-session value (0 unless converted, else lognormal)."""
    converted = rng.binomial(n, rate, sims)
    values = rng.lognormal(3.0, 1.0, converted.sum())
    starts = np.concatenate(([0], np.cumsum(converted)[:-1]))
    sums = np.where(converted > 0, np.add.reduceat(values, starts) if values.size else 0, 0.0)
    squares = np.where(converted > 0, np.add.reduceat(values**2, starts) if values.size else 0, 0.0)
    return [SampleMeanStats(n, float(s), float(q)) for s, q in zip(sums, squares)]


def test_aa_false_positive_rate_fixed_horizon_value():
    rng = np.random.default_rng(7)
    sims, n = 4000, 3000
    a, b = _value_stats(rng, sims, n, 0.1), _value_stats(rng, sims, n, 0.1)
    p = np.array([welch_t_test(x, y, 0.95).p_value for x, y in zip(a, b)])
    assert 0.03 <= np.mean(p < ALPHA) <= 0.07


def test_aa_family_wise_error_with_holm():
    rng = np.random.default_rng(99)
    sims, n, rate, treatments = 8000, 4000, 0.08, 3
    control = rng.binomial(n, rate, sims)
    p = np.array([_z_p_values(control, rng.binomial(n, rate, sims), n) for _ in range(treatments)]).T
    uncorrected = np.mean((p < ALPHA).any(axis=1))
    corrected = np.mean([any(q < ALPHA for q in holm_adjust(list(row))) for row in p])
    assert uncorrected > 0.09  # three looks at the same control inflate the family-wise error...
    assert corrected <= ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / sims)  # ...Holm keeps it at 5% (+2 SE)


def test_aa_sequential_peeking_stays_below_alpha():
    rng = np.random.default_rng(31337)
    sims, looks, per_look, rate = 2000, 20, 1000, 0.1
    planned = 2 * looks * per_look
    a = rng.binomial(per_look, rate, (sims, looks)).cumsum(axis=1)
    b = rng.binomial(per_look, rate, (sims, looks)).cumsum(axis=1)
    ever_sequential = np.zeros(sims, dtype=bool)
    ever_naive = np.zeros(sims, dtype=bool)
    for look in range(looks):
        n = per_look * (look + 1)
        for i in range(sims):
            ca, cb = ProportionStats(n, int(a[i, look])), ProportionStats(n, int(b[i, look]))
            ever_sequential[i] |= sequential_test(ca, cb, 0.95, planned).p_value < ALPHA
            if not ever_naive[i]:
                ever_naive[i] = two_proportion_z_test(ca, cb, 0.95).p_value < ALPHA
    assert ever_sequential.mean() <= ALPHA, ever_sequential.mean()
    assert ever_naive.mean() > 0.15  # the simulation is sensitive: naive peeking inflates errors a lot


def test_power_matches_analytic_power_and_intervals_cover():
    rng = np.random.default_rng(8)
    sims, n, rate_a = 5000, 12000, 0.10
    rate_b = rate_a * 1.10  # a real 10 % relative lift
    z = stats.norm.ppf(1 - ALPHA / 2)
    pooled = (rate_a + rate_b) / 2
    se_null = math.sqrt(pooled * (1 - pooled) * 2 / n)
    se_alt = math.sqrt(rate_a * (1 - rate_a) / n + rate_b * (1 - rate_b) / n)
    delta = rate_b - rate_a
    analytic = stats.norm.cdf((delta - z * se_null) / se_alt) + stats.norm.cdf((-delta - z * se_null) / se_alt)
    results = [
        two_proportion_z_test(ProportionStats(n, int(a)), ProportionStats(n, int(b)), 0.95)
        for a, b in zip(rng.binomial(n, rate_a, sims), rng.binomial(n, rate_b, sims))
    ]
    power = np.mean([r.p_value < ALPHA for r in results])
    assert 0.5 < analytic < 0.9
    assert abs(power - analytic) < 0.03, (power, analytic)  # MC SE ~0.007
    coverage = np.mean([r.absolute.ci_low <= delta <= r.absolute.ci_high for r in results])
    assert abs(coverage - 0.95) < 0.01
    relative_coverage = np.mean([r.relative.ci_low <= 0.10 <= r.relative.ci_high for r in results])
    assert abs(relative_coverage - 0.95) < 0.015


def test_end_to_end_aa_through_analyze_experiment():
    # fewer runs (analyze_experiment also does the Bayesian sums); checks the wiring and status labels
    rng = np.random.default_rng(5)
    sims, n, rate = 600, 4000, 0.1
    wins = losses = 0
    for a, b in zip(rng.binomial(n, rate, sims), rng.binomial(n, rate, sims)):
        rows = analyze_experiment(
            [
                VariantInput("a", True, 50, ProportionStats(n, int(a)), SampleMeanStats(n, 0.0, 0.0)),
                VariantInput("b", False, 50, ProportionStats(n, int(b)), SampleMeanStats(n, 0.0, 0.0)),
            ]
        )["variants"]
        wins += rows[1]["status"] == "significant win"
        losses += rows[1]["status"] == "significant loss"
    assert 0.02 <= (wins + losses) / sims <= 0.08  # wide: only 600 runs (SE ~0.009)
