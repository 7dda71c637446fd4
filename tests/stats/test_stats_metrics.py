"""More metrics (issue 17, deliverable 5): binomial per event type, ratio by the delta method, winsorized value.

The SQL is run on chDB over a small table of events and compared with the same numbers computed
per session in Python (the reference here; production never loops over events).
"""

import math
from datetime import datetime, timezone

import numpy as np
import pytest
from gbstats.models.statistics import RatioStatistic, SampleMeanStatistic

from query_api.metrics.rows import variant_metrics
from query_api.metrics.sql import metric_statistics_sql
from query_api.stats.distributions import normal_cdf, normal_ppf
from query_api.stats.frequentist import two_proportion_z_test, welch_t_test
from query_api.stats.ratio import RatioStats, ratio_test
from tests.helpers import EVENT_COLUMNS

from . import references

AT = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _ratio_stats(num, den):
    num, den = np.asarray(num, float), np.asarray(den, float)
    return RatioStats(len(num), num.sum(), (num**2).sum(), den.sum(), (den**2).sum(), (num * den).sum())


def test_ratio_variance_matches_gbstats():
    rng = np.random.default_rng(8)
    for _ in range(20):
        n = int(rng.integers(10, 5000))
        den = rng.poisson(rng.uniform(0.3, 3), n)
        num = rng.binomial(den, rng.uniform(0.1, 0.9))
        ours = _ratio_stats(num, den)
        gb = RatioStatistic(
            n=n,
            m_statistic=SampleMeanStatistic(n=n, sum=float(num.sum()), sum_squares=float((num**2).sum())),
            d_statistic=SampleMeanStatistic(n=n, sum=float(den.sum()), sum_squares=float((den**2).sum())),
            m_d_sum_of_products=float((num * den).sum()),
        )
        assert ours.mean == pytest.approx(gb.mean, rel=1e-12)
        assert ours.mean_variance == pytest.approx(gb.variance / n, rel=1e-9)


def test_ratio_test_interval_agrees_and_relative_is_fieller():
    rng = np.random.default_rng(9)
    for _ in range(40):
        n_a, n_b = rng.integers(50, 3000, 2)
        den_a, den_b = rng.poisson(1.2, n_a), rng.poisson(1.2, n_b)
        a = _ratio_stats(rng.binomial(den_a, 0.30), den_a)
        b = _ratio_stats(rng.binomial(den_b, rng.choice([0.30, 0.34])), den_b)
        result = ratio_test(a, b, 0.95)
        z = normal_ppf(0.975)
        assert result.absolute.ci_low == pytest.approx(
            result.absolute.estimate - z * math.sqrt(a.mean_variance + b.mean_variance)
        )
        excludes = result.absolute.ci_low > 0 or result.absolute.ci_high < 0
        assert excludes == (result.p_value < 0.05) == (result.relative.ci_low > 0 or result.relative.ci_high < 0)
        low, high = references.fieller(a.mean, a.mean_variance, b.mean, b.mean_variance, z)
        assert [result.relative.ci_low, result.relative.ci_high] == pytest.approx([low - 1, high - 1], rel=1e-9)
    assert ratio_test(_ratio_stats([1], [1]), _ratio_stats([1, 2], [1, 2]), 0.95).p_value is None


def _power_and_fpr(draw, test, sims, seed):
    rng = np.random.default_rng(seed)
    null = np.mean([test(*draw(rng, False)).p_value < 0.05 for _ in range(sims)])
    alternative = np.mean([test(*draw(rng, True)).p_value < 0.05 for _ in range(sims)])
    return null, alternative


def _analytic_power(effect, se):
    z = normal_ppf(0.975)
    return normal_cdf(effect / se - z) + normal_cdf(-effect / se - z)


def test_ratio_metric_power_and_false_positive_rate():
    n, rate, lift = 4000, 0.30, 0.10

    def draw(rng, effect):
        den_a, den_b = rng.poisson(1.5, n), rng.poisson(1.5, n)
        p_b = rate * (1 + lift) if effect else rate
        return _ratio_stats(rng.binomial(den_a, rate), den_a), _ratio_stats(rng.binomial(den_b, p_b), den_b)

    null, power = _power_and_fpr(draw, lambda a, b: ratio_test(a, b, 0.95), 600, 55)
    # per session: numerator ~ Binomial(D, p), D ~ Poisson(1.5): Var(ratio) = p (1 - p) / (1.5 n)
    se = math.sqrt(rate * (1 - rate) / (1.5 * n) + rate * (1 + lift) * (1 - rate * (1 + lift)) / (1.5 * n))
    assert null <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 600), null
    assert power == pytest.approx(_analytic_power(rate * lift, se), abs=0.06), power


def test_binomial_and_capped_value_power():
    n = 3000

    def draw_binomial(rng, effect):
        from query_api.stats.models import ProportionStats

        return ProportionStats(n, int(rng.binomial(n, 0.2))), ProportionStats(n, int(rng.binomial(n, 0.23 if effect else 0.2)))

    null, power = _power_and_fpr(draw_binomial, lambda a, b: two_proportion_z_test(a, b, 0.95), 1000, 56)
    se = math.sqrt((0.2 * 0.8 + 0.23 * 0.77) / n)
    assert null <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 1000)
    assert power == pytest.approx(_analytic_power(0.03, se), abs=0.04)

    def draw_values(rng, effect):
        from query_api.stats.models import SampleMeanStats

        out = []
        for scale in (1.0, 1.15 if effect else 1.0):
            values = np.where(rng.random(n) < 0.1, scale * rng.pareto(1.5, n) * 40, 0.0)  # heavy tail
            cap = 400.0
            capped = np.minimum(values, cap)
            out.append(SampleMeanStats(n, float(capped.sum()), float((capped**2).sum())))
        return out

    null, power = _power_and_fpr(draw_values, lambda a, b: welch_t_test(a, b, 0.95), 400, 57)
    assert null <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 400)
    assert power > 0.1  # measured, reported in the README; capping is what makes it non-trivial


def _session_events(rng, sessions=120):
    rows, expected = [], []
    for s in range(sessions):
        variants = ["a"] if s % 2 else ["b"]
        if s % 37 == 0:
            variants = ["a", "b"]  # exposed to both: excluded everywhere
        for variant in variants:
            counts = {
                kind: int(rng.integers(0, 3)) for kind in ("cta_click", "form_start", "form_submit", "conversion", "custom_x")
            }
            impressions = 0 if s % 23 == 0 else 1 + int(rng.integers(0, 2))
            values = [float(rng.choice([5.0, 20.0, 300.0])) for _ in range(counts["conversion"])]
            events = (
                [("impression", None)] * impressions
                + [(kind, None) for kind in counts for _ in range(counts[kind]) if kind != "conversion"]
                + [("conversion", v) for v in values]
            )
            for i, (kind, value) in enumerate(events):
                rows.append([f"e{s}-{variant}-{i}", "exp", variant, f"s{s}", kind, "/", value, "{}", None, AT])
            rows.append(rows[-1]) if events else None  # a duplicate beacon: FINAL counts it once
            expected.append((variant, f"s{s}", impressions, counts, sum(values), len(variants)))
    return rows, expected


def test_metric_sql_against_chdb(clean_clickhouse):
    rng = np.random.default_rng(12)
    rows, sessions = _session_events(rng)
    client = clean_clickhouse.client()
    client.insert("abacus.events", rows, column_names=EVENT_COLUMNS)
    query = metric_statistics_sql(
        "exp",
        event_types=("cta_click", "form_start", "form_submit", "conversion", "custom_x"),
        ratios=(("form_submit", "form_start"),),
        cap_percentile=0.5,
    )
    stats = variant_metrics(query, client.query(query.sql, parameters=query.parameters).result_rows)
    clean = [s for s in sessions if s[2] > 0 and s[5] == 1]
    positive = sorted(s[4] for s in clean if s[4] > 0)
    cap = float(np.quantile(positive, 0.5, method="inverted_cdf"))
    assert stats["a"].value_cap == pytest.approx(cap)
    for variant in ("a", "b"):
        mine = [s for s in clean if s[0] == variant]
        got = stats[variant]
        assert got.sessions == len(mine)
        for kind in ("cta_click", "form_start", "form_submit", "conversion", "custom_x"):
            assert got.binomial[kind].converted == sum(1 for s in mine if s[3][kind] > 0)
        num = np.array([s[3]["form_submit"] for s in mine], float)
        den = np.array([s[3]["form_start"] for s in mine], float)
        assert got.ratios["form_submit/form_start"] == _ratio_stats(num, den)
        values = np.array([s[4] for s in mine])
        assert got.value.sum == pytest.approx(values.sum()) and got.value.sum_squares == pytest.approx((values**2).sum())
        capped = np.minimum(values, cap)
        assert got.capped_value.sum == pytest.approx(capped.sum())
        assert got.capped_value.sum_squares == pytest.approx((capped**2).sum())


def test_the_rollups_metrics_equal_the_events_query(clean_clickhouse):
    """Every binomial and ratio metric of the built-in event types, from the rollup's totals (a
    rebuild folds the same events), equals what the events' metric query computes."""
    from query_api.metrics.from_rollup import metrics_from_totals
    from query_api.results_query import fetch_rollup_totals
    from shared.rollup.totals import ROLLUP_EVENT_TYPES, event_pairs
    from worker.rollup_store import rebuild_from_events

    rng = np.random.default_rng(7)
    rows, _ = _session_events(rng, sessions=300)
    client = clean_clickhouse.client()
    client.insert("abacus.events", rows, column_names=EVENT_COLUMNS)
    rebuild_from_events(client)
    ratios = tuple((*pair,) for pair in event_pairs()) + tuple((b, a) for a, b in event_pairs()) + (("form_start", "form_start"),)
    query = metric_statistics_sql("exp", event_types=ROLLUP_EVENT_TYPES, ratios=ratios)
    from_events = variant_metrics(query, client.query(query.sql, parameters=query.parameters).result_rows)
    totals = fetch_rollup_totals(client, ["exp"])
    assert set(from_events) == {"a", "b"}
    for variant, expected in from_events.items():
        got = metrics_from_totals(totals[("exp", variant)], ROLLUP_EVENT_TYPES, ratios)
        assert got.sessions == expected.sessions > 0
        assert got.binomial == expected.binomial
        assert got.ratios == expected.ratios
        assert got.value.sum == pytest.approx(expected.value.sum) and got.value.n == expected.value.n


def test_metric_sql_rejects_a_bad_percentile():
    with pytest.raises(ValueError):
        metric_statistics_sql("exp", cap_percentile=1.0)
