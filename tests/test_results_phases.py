"""Phases in the results answer, end to end through the API on real chDB: an allocation change
mid-run (50/50 at a 10 % base rate, then 20/80 at 5 %, no true effect) is two phases, each checked
for SRM against its own allocations; the default analysis is the current phase; `phase=all` is the
stratified comparison. Expectations are computed independently (scipy / by hand), not by the code
under test."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta

import pytest
from scipy import stats as sps
from statsmodels.stats.proportion import proportions_ztest

from query_api.results_phases import cohort_start
from tests.helpers import auth, rebuild_rollup, serve_client
from tests.test_results_api import insert

KEY = "phase_split_test"
DEFINITION = {
    "experiment_key": KEY,
    "name": "Phase split",
    "cookie_name": "ab_phase",
    "variants": [
        {"variant_key": "control", "label": "Control", "allocation": 50, "is_control": True},
        {"variant_key": "treat", "label": "Treat", "allocation": 50},
    ],
}
# (sessions, converted) per variant and phase: within each phase the rates are equal.
PHASE_1 = {"control": (2000, 200), "treat": (2000, 200)}
PHASE_2 = {"control": (1000, 50), "treat": (4000, 200)}


@pytest.fixture(params=["events", "rollup"])
def client(settings, request):
    with serve_client(dataclasses.replace(settings, rollup=request.param == "rollup")) as test_client:
        test_client.source = request.param  # type: ignore[attr-defined]
        test_client.admin = auth(settings, "admin")  # type: ignore[attr-defined]
        yield test_client


@pytest.fixture()
def analyst(settings):
    return auth(settings, "analyst", "ana")


def sessions_rows(phase: int, counts: dict, at: datetime) -> list[tuple]:
    rows = []
    for variant, (sessions, converted) in counts.items():
        for i in range(sessions):
            session = f"p{phase}-{variant}-{i}"
            moment = at + timedelta(milliseconds=i)
            rows.append((KEY, variant, session, "impression", None, moment))
            if i < converted:
                rows.append((KEY, variant, session, "conversion", 10.0, moment + timedelta(seconds=1)))
    return rows


def two_phases(client, clickhouse) -> list[dict]:
    admin = client.admin
    assert client.post("/api/admin/experiments", json=DEFINITION, headers=admin).status_code == 201
    changed = {k: DEFINITION[k] for k in ("name", "cookie_name", "variants")}
    changed["variants"] = [{**changed["variants"][0], "allocation": 20}, {**changed["variants"][1], "allocation": 80}]
    url = f"/api/admin/experiments/{KEY}"
    assert client.put(url, json=changed, headers=admin).status_code == 409  # enabled: a change of split is confirmed
    assert client.put(f"{url}?force=true", json=changed, headers=admin).status_code == 200
    history = client.get(f"{url}/history", headers=admin).json()
    change_at = datetime.fromisoformat(history[1]["changed_at"])
    insert(clickhouse, sessions_rows(1, PHASE_1, change_at - timedelta(days=2)))
    # Phase 2's sessions from the first whole minute after the change: the minute it fell in
    # still belongs to phase 1 (query_api.results_phases.cohort_start).
    insert(clickhouse, sessions_rows(2, PHASE_2, cohort_start(change_at)))
    if client.source == "rollup":
        rebuild_rollup(client, admin)
    return history


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def get(client, headers, query: str):
    response = client.get(f"/api/v1/experiments/results?experiment_key={KEY}{query}", headers=headers)
    assert response.status_code == 200, response.text
    # Phases count whole minutes of first exposure: the rollup alone answers, when it runs.
    assert response.headers["x-abacus-source"] == client.source
    return response.json()[0]


def chi_square_p(observed: dict, allocations: dict) -> float:
    total = sum(observed.values())
    keys = sorted(observed)
    return float(sps.chisquare([observed[k] for k in keys], [total * allocations[k] / 100 for k in keys]).pvalue)


def test_an_allocation_change_is_two_phases_each_with_its_own_srm(client, analyst, clean_clickhouse):
    history = two_phases(client, clean_clickhouse)
    body = get(client, analyst, "")
    phases = body["phases"]
    assert [p["phase"] for p in phases] == [1, 2]
    assert [p["allocations"] for p in phases] == [{"control": 50, "treat": 50}, {"control": 20, "treat": 80}]
    assert phases[0]["start"] == datetime.fromisoformat(history[0]["changed_at"]).isoformat()
    assert phases[0]["end"] == phases[1]["start"] == datetime.fromisoformat(history[1]["changed_at"]).isoformat()
    assert phases[1]["end"] is None
    for phase, counts in zip(phases, (PHASE_1, PHASE_2)):
        observed = {k: n for k, (n, _) in counts.items()}
        assert phase["sessions"] == observed
        assert phase["srm"]["flagged"] is False
        assert phase["srm"]["p_value"] == pytest.approx(chi_square_p(observed, phase["allocations"]), rel=1e-9)
    # Checked against the current 20/80 instead, all sessions together would be a flagrant mismatch.
    pooled = {k: PHASE_1[k][0] + PHASE_2[k][0] for k in PHASE_1}
    assert chi_square_p(pooled, {"control": 20, "treat": 80}) < 1e-100
    # The body's counts stay all time (every phase).
    assert {v["variant_key"]: v["unique_sessions"] for v in body["variants"]} == pooled
    assert {v["variant_key"]: v["conversions"] for v in body["variants"]} == {k: PHASE_1[k][1] + PHASE_2[k][1] for k in PHASE_1}


def test_default_analysis_is_the_current_phase_and_phase_selects_another(client, analyst, clean_clickhouse):
    two_phases(client, clean_clickhouse)
    current = get(client, analyst, "")
    assert current["analysis_phase"] == 2 and current["analysis"]["phase"] == 2
    rows = {v["variant_key"]: v for v in current["analysis"]["variants"]}
    assert {k: (r["sessions"], r["conversions"]) for k, r in rows.items()} == PHASE_2
    assert rows["treat"]["allocation"] == 80 and current["analysis"]["srm"]["flagged"] is False
    assert rows["treat"]["status_code"] == "no_difference"
    assert "Phase 2 of 2" in current["analysis"]["messages"][0]
    first = get(client, analyst, "&phase=1")
    assert first["analysis_phase"] == 1
    assert {v["variant_key"]: (v["sessions"], v["allocation"]) for v in first["analysis"]["variants"]} == {
        "control": (2000, 50),
        "treat": (2000, 50),
    }
    # Pooling the phases, as before, would call this no-effect experiment a significant loss.
    pooled_p = proportions_ztest([400, 250], [6000, 3000])[1]
    assert pooled_p < 0.01


def test_all_phases_is_the_stratified_comparison(client, analyst, clean_clickhouse):
    two_phases(client, clean_clickhouse)
    body = get(client, analyst, "&phase=all")
    assert body["analysis_phase"] == "all" and body["analysis"]["stratified"] is True
    treat = body["analysis"]["variants"][1]
    block = treat["comparison"]["conversion_rate"]
    # Independent: within-phase differences weighted by each phase's share of the sessions.
    strata = [(PHASE_1["control"], PHASE_1["treat"]), (PHASE_2["control"], PHASE_2["treat"])]
    total = sum(c[0] + t[0] for c, t in strata)
    weights = [(c[0] + t[0]) / total for c, t in strata]
    difference = sum(w * (t[1] / t[0] - c[1] / c[0]) for w, (c, t) in zip(weights, strata))
    variance = sum(
        w * w * ((c[1] / c[0]) * (1 - c[1] / c[0]) / c[0] + (t[1] / t[0]) * (1 - t[1] / t[0]) / t[0])
        for w, (c, t) in zip(weights, strata)
    )
    assert block["absolute_lift"]["estimate"] == pytest.approx(difference, abs=1e-12)
    half = sps.norm.ppf(0.975) * math.sqrt(variance)
    assert block["absolute_lift"]["ci_low"] == pytest.approx(difference - half, rel=1e-9)
    assert block["absolute_lift"]["ci_high"] == pytest.approx(difference + half, rel=1e-9)
    assert block["p_value"] == pytest.approx(2 * sps.norm.sf(abs(difference) / math.sqrt(variance)), abs=1e-12)
    assert block["significant"] is False and treat["status_code"] == "no_difference"
    assert body["analysis"]["srm"]["flagged"] is False


def test_bad_phase_parameters_are_400(client, analyst, clean_clickhouse):
    two_phases(client, clean_clickhouse)
    for query, field in (
        ("&phase=3", "phase"),
        ("&phase=0", "phase"),
        ("&phase=two", "phase"),
        ("&phase=all&sequential=true", "phase"),
        ("&metrics=Bad", "metrics"),
        ("&metrics=impression", "metrics"),
    ):
        response = client.get(f"/api/v1/experiments/results?experiment_key={KEY}{query}", headers=analyst)
        assert response.status_code == 400, (query, response.text)
        assert response.json()["field"] == field


def test_srm_within_the_current_phase_makes_the_status_unreliable(client, analyst, clean_clickhouse):
    admin = client.admin
    assert client.post("/api/admin/experiments", json=DEFINITION, headers=admin).status_code == 201
    at = datetime.fromisoformat(client.get(f"/api/admin/experiments/{KEY}/history", headers=admin).json()[0]["changed_at"])
    insert(clean_clickhouse, sessions_rows(1, {"control": (5000, 500), "treat": (6000, 720)}, at + timedelta(seconds=1)))
    if client.source == "rollup":
        rebuild_rollup(client, admin)
    response = client.get(f"/api/v1/experiments/results?experiment_key={KEY}", headers=analyst)
    body = response.json()[0]
    assert response.headers["x-abacus-source"] == client.source  # one phase: all time, from the rollup when it runs
    assert len(body["phases"]) == 1 and body["phases"][0]["srm"]["flagged"] is True
    assert body["analysis"]["variants"][1]["status_code"] == "unreliable_srm"


@pytest.mark.parametrize(
    ("fields", "source", "planned"),
    [({"planned_sessions": 40_000}, "planned_sessions", 40_000.0), ({}, "default", 5_000.0)],
)
def test_sequential_uses_the_definitions_planned_sessions(client, analyst, clean_clickhouse, fields, source, planned):
    assert client.post("/api/admin/experiments", json={**DEFINITION, **fields}, headers=client.admin).status_code == 201
    at = datetime.fromisoformat(client.get(f"/api/admin/experiments/{KEY}/history", headers=client.admin).json()[0]["changed_at"])
    insert(clean_clickhouse, sessions_rows(1, PHASE_1, at + timedelta(seconds=1)))
    if client.source == "rollup":
        rebuild_rollup(client, client.admin)
    analysis = client.get(f"/api/v1/experiments/results?experiment_key={KEY}&sequential=true", headers=analyst).json()[0][
        "analysis"
    ]
    tuning = analysis["sequential_tuning"]
    assert tuning["source"] == source and tuning["planned_sessions_per_comparison"] == {"treat": planned}
    assert analysis["sequential_planned_sessions"] == planned


def test_sequential_derives_the_planned_size_from_the_target_mde(client, analyst, clean_clickhouse):
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    assert client.post("/api/admin/experiments", json={**DEFINITION, "target_mde": 0.2}, headers=client.admin).status_code == 201
    at = datetime.fromisoformat(client.get(f"/api/admin/experiments/{KEY}/history", headers=client.admin).json()[0]["changed_at"])
    insert(clean_clickhouse, sessions_rows(1, PHASE_1, at + timedelta(seconds=1)))
    if client.source == "rollup":
        rebuild_rollup(client, client.admin)
    tuning = client.get(f"/api/v1/experiments/results?experiment_key={KEY}&sequential=true", headers=analyst).json()[0][
        "analysis"
    ]["sequential_tuning"]
    assert tuning["source"] == "target_mde" and tuning["target_mde"] == 0.2
    per_variant = NormalIndPower().solve_power(proportion_effectsize(0.12, 0.10), alpha=0.05, power=0.8, ratio=1.0)
    assert tuning["planned_sessions_per_comparison"]["treat"] == pytest.approx(2 * per_variant, rel=0.02)


def test_a_window_applies_within_the_phases(client, analyst, clean_clickhouse):
    history = two_phases(client, clean_clickhouse)
    since = (datetime.fromisoformat(history[1]["changed_at"]) - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    response = client.get(f"/api/v1/experiments/results?experiment_key={KEY}&from={since}", headers=analyst)
    assert response.status_code == 200, response.text
    body = response.json()[0]
    # Phase 1's sessions were first exposed two days before the change: outside the window.
    assert [p["sessions"] for p in body["phases"]] == [{"control": 0, "treat": 0}, {k: n for k, (n, _) in PHASE_2.items()}]
    assert {v["variant_key"]: v["unique_sessions"] for v in body["variants"]} == {k: n for k, (n, _) in PHASE_2.items()}
    assert body["analysis_phase"] == 2


def test_results_csv_follows_the_phase_parameter(client, analyst, clean_clickhouse):
    import csv
    import io

    two_phases(client, clean_clickhouse)
    for query, expected in (("", "2"), ("&phase=1", "1"), ("&phase=all", "all")):
        response = client.get(f"/api/v1/experiments/results.csv?experiment_key={KEY}{query}", headers=analyst)
        assert response.status_code == 200, response.text
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [r["analysis_phase"] for r in rows] == [expected, expected]
        sessions = {"2": PHASE_2, "1": PHASE_1}.get(expected)
        if sessions:
            assert {r["variant_key"]: int(r["exposed_sessions"]) for r in rows} == {k: n for k, (n, _) in sessions.items()}
        assert {r["variant_key"]: r["status_code"] for r in rows}["treat"] == "no_difference"
    assert client.get(f"/api/v1/experiments/results.csv?experiment_key={KEY}&phase=9", headers=analyst).status_code == 400


def test_the_minute_a_phase_starts_in_counts_in_the_phase_before(client, analyst, clean_clickhouse):
    history = two_phases(client, clean_clickhouse)
    change_at = datetime.fromisoformat(history[1]["changed_at"])
    if cohort_start(change_at) - change_at < timedelta(milliseconds=25) or change_at - minute_of(change_at) < timedelta(
        milliseconds=35
    ):
        pytest.skip("the allocation change fell within milliseconds of a minute's start or end: no room for both sides")
    # Sessions first exposed in the minute of the change, before it and after it (one per ms from
    # the minute's start, and from the change): all of them count in phase 1.
    before = {"control": (30, 3), "treat": (10, 1)}
    after = {"control": (5, 1), "treat": (20, 2)}
    rows = [
        (KEY, v, f"late-{s}", kind, value, at) for (_, v, s, kind, value, at) in sessions_rows(1, before, minute_of(change_at))
    ]
    rows += [(KEY, v, f"after-{s}", kind, value, at) for (_, v, s, kind, value, at) in sessions_rows(1, after, change_at)]
    insert(clean_clickhouse, rows)
    if client.source == "rollup":
        rebuild_rollup(client, client.admin)
    body = get(client, analyst, "&phase=1")
    extra = {k: (before[k][0] + after[k][0], before[k][1] + after[k][1]) for k in before}
    assert body["phases"][0]["sessions"] == {k: PHASE_1[k][0] + extra[k][0] for k in PHASE_1}
    assert body["phases"][1]["sessions"] == {k: n for k, (n, _) in PHASE_2.items()}
    rows_by_key = {v["variant_key"]: (v["sessions"], v["conversions"]) for v in body["analysis"]["variants"]}
    assert rows_by_key == {k: (PHASE_1[k][0] + extra[k][0], PHASE_1[k][1] + extra[k][1]) for k in PHASE_1}
    assert body["freshness"]["counts_source"] == client.source
    # The time series of phase 1 ends with that minute, from the rollup alone.
    series = client.get(f"/api/v1/experiments/results/timeseries?experiment_key={KEY}&phase=1", headers=analyst)
    assert series.headers["x-abacus-source"] == client.source
    last = {
        s["variant_key"]: (s["points"][-1]["exposed_sessions"], s["points"][-1]["converted_sessions"])
        for s in series.json()["variants"]
    }
    assert last == rows_by_key


def test_two_phases_come_from_the_rollup_alone_when_no_session_began_on_the_boundary_day(client, analyst, clean_clickhouse):
    admin = client.admin
    assert client.post("/api/admin/experiments", json=DEFINITION, headers=admin).status_code == 201
    changed = {k: DEFINITION[k] for k in ("name", "cookie_name", "variants")}
    changed["variants"] = [{**changed["variants"][0], "allocation": 20}, {**changed["variants"][1], "allocation": 80}]
    assert client.put(f"/api/admin/experiments/{KEY}?force=true", json=changed, headers=admin).status_code == 200
    history = client.get(f"/api/admin/experiments/{KEY}/history", headers=admin).json()
    change_at = datetime.fromisoformat(history[1]["changed_at"])
    insert(clean_clickhouse, sessions_rows(1, PHASE_1, change_at - timedelta(days=2)))
    if client.source == "rollup":
        rebuild_rollup(client, admin)
    response = client.get(f"/api/v1/experiments/results?experiment_key={KEY}&phase=1", headers=analyst)
    assert response.status_code == 200, response.text
    assert response.headers["x-abacus-source"] == client.source
    body = response.json()[0]
    assert body["phases"][0]["sessions"] == {k: n for k, (n, _) in PHASE_1.items()}
    assert body["phases"][1]["sessions"] == {"control": 0, "treat": 0}
    assert {v["variant_key"]: v["conversions"] for v in body["analysis"]["variants"]} == {k: c for k, (_, c) in PHASE_1.items()}
    series = client.get(f"/api/v1/experiments/results/timeseries?experiment_key={KEY}&phase=1", headers=analyst)
    assert series.headers["x-abacus-source"] == client.source
    last = {
        s["variant_key"]: (s["points"][-1]["exposed_sessions"], s["points"][-1]["converted_sessions"])
        for s in series.json()["variants"]
    }
    assert last == PHASE_1


def test_the_timeseries_follows_the_phase_choice(client, analyst, clean_clickhouse):
    two_phases(client, clean_clickhouse)
    url = f"/api/v1/experiments/results/timeseries?experiment_key={KEY}"

    def last_points(query: str) -> tuple[object, dict]:
        response = client.get(url + query, headers=analyst)
        assert response.status_code == 200, response.text
        body = response.json()
        return body["phase"], {
            s["variant_key"]: (s["points"][-1]["exposed_sessions"], s["points"][-1]["converted_sessions"])
            for s in body["variants"]
        }

    assert last_points("") == (2, PHASE_2)  # the current phase, as the results' analysis
    # Daily: the rollup's minutes, when it runs.
    daily = client.get(url, headers=analyst).headers["x-abacus-source"]
    assert daily == client.source
    assert last_points("&phase=2") == (2, PHASE_2)
    assert last_points("&phase=1") == (1, PHASE_1)
    assert last_points("&phase=all&interval=hour") == (
        "all",
        {k: (PHASE_1[k][0] + PHASE_2[k][0], PHASE_1[k][1] + PHASE_2[k][1]) for k in PHASE_1},
    )
    for bad in ("&phase=3", "&phase=zero"):
        answer = client.get(url + bad, headers=analyst)
        assert answer.status_code == 400 and answer.json()["field"] == "phase"
