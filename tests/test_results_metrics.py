"""More metrics in the results answer, end to end on real chDB: binomial metrics per event type
(custom ones too), a ratio metric by the delta method, value per session winsorized at the
definition's percentile, and the definition's primary and guardrail metrics driving the status.
Every expected number is recomputed here from the generated sessions (numpy / scipy / statsmodels)."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.proportion import proportions_ztest

from tests.helpers import auth, rebuild_rollup, serve_client
from tests.test_results_api import insert

KEY = "metric_mix_test"
VARIANTS = [
    {"variant_key": "control", "label": "Control", "allocation": 50, "is_control": True},
    {"variant_key": "treat", "label": "Treat", "allocation": 50},
]
START = datetime(2026, 3, 2, tzinfo=timezone.utc)


@pytest.fixture(params=["events", "rollup"])
def client(settings, request):
    with serve_client(dataclasses.replace(settings, rollup=request.param == "rollup")) as test_client:
        test_client.source = request.param  # type: ignore[attr-defined]
        test_client.admin = auth(settings, "admin")  # type: ignore[attr-defined]
        yield test_client


@pytest.fixture()
def analyst(settings):
    return auth(settings, "analyst", "ana")


def generate(seed: int, submit_rate: dict, value_scale: dict, sessions: int = 1500):
    """Rows for the API and, per variant, the per-session arrays an independent computation needs."""
    rng = np.random.default_rng(seed)
    rows, per_session = [], {}
    for variant in ("control", "treat"):
        counts = {k: np.zeros(sessions) for k in ("cta_click", "form_start", "form_submit", "video_play", "value")}
        for i in range(sessions):
            session, at = f"{variant}-{i}", START + timedelta(seconds=i)
            rows.append((KEY, variant, session, "impression", None, at))
            events = {
                "cta_click": int(rng.random() < 0.3),
                "video_play": int(rng.random() < 0.2),
                "form_start": int(rng.integers(0, 3)),
            }
            events["form_submit"] = int(rng.binomial(events["form_start"], submit_rate[variant]))
            for kind, n in events.items():
                counts[kind][i] = n
                rows += [(KEY, variant, session, kind, None, at + timedelta(milliseconds=j + 1)) for j in range(n)]
            if rng.random() < 0.3:
                value = round(float(rng.pareto(1.5) + 1) * value_scale[variant], 2)
                counts["value"][i] = value
                rows.append((KEY, variant, session, "conversion", value, at + timedelta(seconds=1)))
        per_session[variant] = counts
    return rows, per_session


def create(client, **fields) -> None:
    body = {"experiment_key": KEY, "name": "Metric mix", "cookie_name": "ab_mix", "variants": VARIANTS, **fields}
    created = client.post("/api/admin/experiments", json=body, headers=client.admin)
    assert created.status_code == 201, created.text


def results(client, headers, query: str = ""):
    response = client.get(f"/api/v1/experiments/results?experiment_key={KEY}{query}", headers=headers)
    assert response.status_code == 200, response.text
    return response


def delta_ratio(numerator: np.ndarray, denominator: np.ndarray) -> tuple[float, float]:
    """Ratio of means and its delta-method variance, written out here."""
    n = len(numerator)
    mu_n, mu_d = numerator.mean(), denominator.mean()
    cov = np.cov(numerator, denominator, ddof=1)
    variance = (cov[0, 0] / mu_d**2 - 2 * cov[0, 1] * mu_n / mu_d**3 + cov[1, 1] * mu_n**2 / mu_d**4) / n
    return mu_n / mu_d, variance


def test_metrics_match_an_independent_computation(client, analyst, clean_clickhouse):
    create(
        client,
        primary_metric="form_submit",
        guardrail_metrics=["value_per_session", "form_submit/form_start"],
        value_cap_percentile=90,
    )
    rows, data = generate(17, {"control": 0.3, "treat": 0.4}, {"control": 20.0, "treat": 20.0})
    insert(clean_clickhouse, rows)
    response = results(client, analyst, "&metrics=all")
    # These metrics are not in the rollup: the analysis comes from the events (the counts from the rollup when it runs).
    assert response.headers["x-abacus-source"] == ("events" if client.source == "events" else "rollup+events")
    analysis = response.json()[0]["analysis"]
    assert analysis["primary_metric"] == "form_submit"
    assert analysis["guardrail_metrics"] == ["value_per_session", "form_submit/form_start"]
    control, treat = analysis["variants"]
    c, t = data["control"], data["treat"]
    n = len(c["cta_click"])

    # Binomial metrics: exposed sessions with at least one such event, custom events included.
    for kind in ("cta_click", "form_start", "form_submit", "video_play"):
        assert control["metrics"][kind] == pytest.approx((c[kind] > 0).mean(), abs=1e-12)
        assert treat["metrics"][kind] == pytest.approx((t[kind] > 0).mean(), abs=1e-12)
        expected_p = proportions_ztest([(t[kind] > 0).sum(), (c[kind] > 0).sum()], [n, n])[1]
        assert treat["metric_comparisons"][kind]["p_value"] == pytest.approx(expected_p, rel=1e-9)

    # The ratio metric by the delta method.
    ratio_c, var_c = delta_ratio(c["form_submit"], c["form_start"])
    ratio_t, var_t = delta_ratio(t["form_submit"], t["form_start"])
    block = treat["metric_comparisons"]["form_submit/form_start"]
    assert treat["metrics"]["form_submit/form_start"] == pytest.approx(ratio_t, rel=1e-12)
    assert block["absolute_lift"]["estimate"] == pytest.approx(ratio_t - ratio_c, rel=1e-9)
    z = (ratio_t - ratio_c) / math.sqrt(var_c + var_t)
    assert block["p_value"] == pytest.approx(2 * sps.norm.sf(abs(z)), rel=1e-7)

    # Value per session, winsorized at the 90th percentile of the positive session values.
    cap = analysis["value_cap"]["cap"]
    positive = np.concatenate([c["value"], t["value"]])
    positive = positive[positive > 0]
    assert cap in set(positive)
    assert np.quantile(positive, 0.9, method="lower") <= cap <= np.quantile(positive, 0.9, method="higher")
    capped_c, capped_t = np.minimum(c["value"], cap), np.minimum(t["value"], cap)
    value = treat["comparison"]["value_per_session"]
    assert value["control"] == pytest.approx(capped_c.mean(), rel=1e-9)
    assert value["variant"] == pytest.approx(capped_t.mean(), rel=1e-9)
    assert value["p_value"] == pytest.approx(sps.ttest_ind(capped_t, capped_c, equal_var=False).pvalue, rel=1e-7)

    # The status follows the primary metric (form_submit), with the guardrails checked.
    primary = treat["metric_comparisons"]["form_submit"]
    assert primary["significant"] is True and primary["absolute_lift"]["estimate"] > 0
    assert not [b for b in (value, block) if b["significant"] and b["absolute_lift"]["estimate"] < 0]
    assert treat["status_code"] == "win"
    assert "form_submit" in treat["status_message"]


def test_a_guardrail_regression_sets_the_status(client, analyst, clean_clickhouse):
    # Default metrics: conversion primary, value per session guardrail, both from the rollup when it runs.
    create(client)
    rows, data = generate(5, {"control": 0.3, "treat": 0.3}, {"control": 40.0, "treat": 8.0}, sessions=2000)
    insert(clean_clickhouse, rows)
    if client.source == "rollup":
        rebuild_rollup(client, client.admin)
    response = results(client, analyst)
    assert response.headers["x-abacus-source"] == client.source
    treat = response.json()[0]["analysis"]["variants"][1]
    c, t = data["control"]["value"], data["treat"]["value"]
    assert sps.ttest_ind(t, c, equal_var=False).pvalue < 0.05 and t.mean() < c.mean()
    conversion = treat["comparison"]["conversion_rate"]
    expected_conversion_p = proportions_ztest([(t > 0).sum(), (c > 0).sum()], [len(t), len(c)])[1]
    assert conversion["p_value"] == pytest.approx(expected_conversion_p, rel=1e-9)
    assert expected_conversion_p > 0.05  # the primary metric alone says "no difference"
    assert treat["status_code"] == "guardrail_regression"
    assert "value_per_session" in treat["status_message"]
    assert treat["metrics"] == {}  # nothing beyond the built-in metrics was asked for


def test_the_source_says_counts_came_from_the_rollup_and_the_extra_metrics_from_the_events(settings, analyst, clean_clickhouse):
    """The nine counts come from the rollup while a metric beyond it (a custom event type) comes
    from the events: the header and the freshness fields must name both, not claim the events
    (and so current). A metric of a built-in event type comes from the rollup with the counts."""
    with serve_client(dataclasses.replace(settings, rollup=True)) as client:
        client.admin = auth(settings, "admin")  # type: ignore[attr-defined]
        create(client)
        rows, _ = generate(3, {"control": 0.3, "treat": 0.3}, {"control": 10.0, "treat": 10.0}, sessions=200)
        insert(clean_clickhouse, rows)
        rebuild_rollup(client, client.admin)
        # Rows the rollup never folded (they bypass the stream): the events have them, the rollup not.
        late = [(KEY, "treat", "late-session", "impression", None, START + timedelta(hours=1))]
        insert(clean_clickhouse, late)
        plain = results(client, analyst)
        assert plain.headers["x-abacus-source"] == "rollup"
        assert plain.json()[0]["freshness"]["counts_source"] == plain.json()[0]["freshness"]["analysis_source"] == "rollup"
        built_in = results(client, analyst, "&metrics=form_start,form_submit/form_start")
        assert built_in.headers["x-abacus-source"] == "rollup"
        assert built_in.json()[0]["freshness"]["analysis_source"] == "rollup"
        assert next(v for v in built_in.json()[0]["analysis"]["variants"] if v["variant_key"] == "treat")["sessions"] == 200
        response = results(client, analyst, "&metrics=newsletter_signup")
        assert response.headers["x-abacus-source"] == "rollup+events"
        body = response.json()[0]
        assert body["freshness"]["counts_source"] == "rollup" and body["freshness"]["analysis_source"] == "events"
        assert "Counts from the rollup, analysis from the events" in body["freshness"]["message"]
        treat_counts = next(v for v in body["variants"] if v["variant_key"] == "treat")
        treat_analysis = next(v for v in body["analysis"]["variants"] if v["variant_key"] == "treat")
        assert treat_counts["unique_sessions"] == 200  # the rollup's
        assert treat_analysis["sessions"] == 201  # the events'
