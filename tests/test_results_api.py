"""Results and time series over HTTP, on rows inserted into chDB the way the worker writes them.

Every results test runs twice: once computed from abacus.events (no roller), once from the
rollup (rebuilt from the rows the test inserted, through the admin endpoint), so both ways of
counting are held to the same expectations.
"""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import count_events, wait_for
from tests.helpers import EVENT_COLUMNS, auth, beacon, rebuild_rollup, serve_client

NINE_KEYS = [
    "variant_key",
    "impressions",
    "cta_clicks",
    "form_starts",
    "form_submits",
    "conversions",
    "unique_sessions",
    "conversion_rate",
    "conversion_value_total",
]
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def insert(clickhouse, rows) -> None:
    """rows: (experiment_key, variant_key, session_id, event_type, value, received_at[, event_id])."""
    data = []
    for index, row in enumerate(rows):
        experiment, variant, session, kind, value, at, *event_id = row
        data.append(
            [
                event_id[0] if event_id else f"ev-{index}-{random.random()}",
                experiment,
                variant,
                session,
                kind,
                "/",
                value,
                "{}",
                at,
                at,
            ]
        )
    clickhouse.client().insert("abacus.events", data, column_names=EVENT_COLUMNS)


@pytest.fixture(params=["events", "rollup"])
def client(settings, request):
    with serve_client(dataclasses.replace(settings, rollup=request.param == "rollup")) as test_client:
        test_client.source = request.param  # type: ignore[attr-defined]
        test_client.admin = auth(settings, "admin")  # type: ignore[attr-defined]
        yield test_client


@pytest.fixture()
def analyst(settings):
    return auth(settings, "analyst", "ana")


def results(client, headers, query: str = ""):
    all_time = "from=" not in query and "to=" not in query
    whole_minutes = all(
        f"{bound}=" not in query or datetime.fromisoformat(_bound(query, bound)).second == 0 for bound in ("from", "to")
    )
    if client.source == "rollup" and (all_time or whole_minutes) and not getattr(client, "rebuilt", False):
        rebuild_rollup(client, client.admin)
        client.rebuilt = True  # type: ignore[attr-defined]
    response = client.get(f"/api/v1/experiments/results{query}", headers=headers)
    assert response.status_code == 200, response.text
    # All time and whole UTC minutes come from the rollup when it runs; other windows from the events.
    assert response.headers["x-abacus-source"] == (client.source if whole_minutes else "events")
    return response.json()


def _bound(query: str, name: str) -> str:
    from urllib.parse import unquote

    return unquote(query.split(f"{name}=")[1].split("&")[0]).replace("Z", "+00:00")


def test_counts_per_variant_with_exactly_nine_keys_in_definition_order(client, analyst, clean_clickhouse):
    h = "homepage_hero_test"
    insert(
        clean_clickhouse,
        [
            (h, "tiny_gang_social_proof", "s1", "impression", None, NOW),
            (h, "tiny_gang_social_proof", "s1", "impression", None, NOW),
            (h, "tiny_gang_social_proof", "s1", "form_start", None, NOW),
            (h, "tiny_gang_social_proof", "s1", "form_submit", None, NOW),
            (h, "tiny_gang_social_proof", "s1", "conversion", 10.0, NOW),
            (h, "tiny_gang_social_proof", "s1", "conversion", 2.5, NOW),
            (h, "tiny_gang_social_proof", "s2", "impression", None, NOW),
            (h, "tiny_gang_social_proof", "s3", "conversion", 4.0, NOW),  # converted without impression
            (h, "tiny_gang_social_proof", "s4", "video_play", None, NOW),  # custom events count as a session
        ],
    )
    body = results(client, analyst, "?experiment_key=homepage_hero_test")
    assert len(body) == 1
    control, treatment = body[0]["variants"]
    assert list(control) == NINE_KEYS and list(treatment) == NINE_KEYS
    assert control == {k: (0.0 if k in ("conversion_rate", "conversion_value_total") else 0) for k in NINE_KEYS} | {
        "variant_key": "control"
    }
    assert treatment == {
        "variant_key": "tiny_gang_social_proof",
        "impressions": 3,
        "cta_clicks": 0,
        "form_starts": 1,
        "form_submits": 1,
        "conversions": 3,
        "unique_sessions": 4,
        "conversion_rate": 0.5,  # s1 of {s1, s2}; s3 converted but never saw the variant
        "conversion_value_total": 16.5,
    }
    assert isinstance(treatment["conversion_rate"], float) and isinstance(control["conversion_value_total"], float)


def test_all_experiments_when_no_key_and_404_for_unknown(client, analyst):
    body = results(client, analyst)
    assert [e["experiment_key"] for e in body] == ["homepage_hero_test", "pricing_cta_test"]
    assert [v["variant_key"] for v in body[1]["variants"]] == ["control", "meet_greet_emphasis"]
    assert client.get("/api/v1/experiments/results?experiment_key=nope", headers=analyst).status_code == 404


def test_events_are_counted_once_per_event_id(client, analyst, clean_clickhouse):
    row = ("pricing_cta_test", "control", "s1", "conversion", 5.0, NOW, "same-id")
    insert(clean_clickhouse, [row, row])
    insert(clean_clickhouse, [row])  # a second part, as a retried insert would make
    control = results(client, analyst, "?experiment_key=pricing_cta_test")[0]["variants"][0]
    assert control["conversions"] == 1
    assert control["conversion_value_total"] == 5.0


def test_a_window_selects_the_sessions_first_exposed_in_it(client, analyst, clean_clickhouse):
    p = "pricing_cta_test"
    day1 = (NOW - timedelta(days=3)).replace(hour=10, minute=0, second=0)
    day2 = day1 + timedelta(days=1)
    insert(
        clean_clickhouse,
        [
            (p, "control", "early", "impression", None, day1),
            (p, "control", "early", "conversion", 8.0, day2),  # converts the next day
            (p, "control", "late", "impression", None, day2),
        ],
    )
    midnight = day1.replace(hour=0).strftime("%Y-%m-%dT00:00:00Z")
    next_midnight = day2.replace(hour=0).strftime("%Y-%m-%dT00:00:00Z")
    half_minute_before = (day1 - timedelta(seconds=30)).isoformat().replace("+00:00", "Z")  # not whole minutes: the events
    for window in (
        f"&from={midnight}&to={next_midnight}",
        f"&from={day1.isoformat().replace('+00:00', 'Z')}&to={next_midnight}",
        f"&from={half_minute_before}&to={next_midnight}",
    ):
        first_day = results(client, analyst, f"?experiment_key={p}{window}")[0]["variants"][0]
        # Day 1's cohort is "early": its conversion on day 2 counts with it.
        assert (first_day["impressions"], first_day["conversions"], first_day["unique_sessions"]) == (1, 1, 1)
        assert first_day["conversion_rate"] == 1.0 and first_day["conversion_value_total"] == 8.0
    second_day = results(client, analyst, f"?experiment_key={p}&from={next_midnight}")[0]["variants"][0]
    # Day 2's cohort is "late" only: no conversion without its impression.
    assert (second_day["impressions"], second_day["conversions"], second_day["unique_sessions"]) == (1, 0, 1)


def test_time_window_filters_on_receive_time(client, analyst, clean_clickhouse):
    p = "pricing_cta_test"
    insert(
        clean_clickhouse,
        [
            (p, "control", "old", "impression", None, NOW - timedelta(days=3)),
            (p, "control", "new", "impression", None, NOW - timedelta(hours=1)),
        ],
    )
    since = (NOW - timedelta(days=1)).isoformat()
    control = results(client, analyst, f"?experiment_key={p}&from={since.replace('+', '%2B')}")[0]["variants"][0]
    assert control["impressions"] == 1
    until = (NOW - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    control = results(client, analyst, f"?experiment_key={p}&to={until}")[0]["variants"][0]
    assert control["impressions"] == 1
    assert results(client, analyst, f"?experiment_key={p}")[0]["variants"][0]["impressions"] == 2


@pytest.mark.parametrize(
    "query",
    [
        "?from=yesterday",
        "?to=2026-13-01",
        "?from=2026-02-01&to=2026-01-01",
        "?from=0001-01-01",
        "?to=9999-12-31",
        "?confidence=0.49",
        "?confidence=0.9995",
        "?confidence=abc",
        "?sequential=maybe",
    ],
)
def test_bad_query_parameters_are_400(client, analyst, query):
    response = client.get(f"/api/v1/experiments/results{query}", headers=analyst)
    assert response.status_code == 400, response.text


def test_analysis_is_attached_and_json_clean(client, analyst, clean_clickhouse):
    rng = random.Random(7)
    rows = []
    for i in range(4000):
        variant = "control" if i % 2 == 0 else "meet_greet_emphasis"
        session = f"s{i}"
        rows.append(("pricing_cta_test", variant, session, "impression", None, NOW))
        rate = 0.10 if variant == "control" else 0.16
        if rng.random() < rate:
            rows.append(("pricing_cta_test", variant, session, "conversion", round(rng.uniform(5, 50), 2), NOW))
    insert(clean_clickhouse, rows)
    body = results(client, analyst, "?experiment_key=pricing_cta_test&confidence=0.99")
    analysis = body[0]["analysis"]
    json.dumps(analysis, allow_nan=False)
    assert analysis["confidence"] == 0.99
    assert analysis["srm"]["flagged"] is False
    treatment = analysis["variants"][1]
    assert treatment["sessions"] == 2000
    assert treatment["status"] == "significant win"
    assert treatment["comparison"]["conversion_rate"]["bayesian"]["chance_to_beat_control"] > 0.99
    assert treatment["comparison"]["value_per_session"]["p_value"] is not None
    sequential = results(client, analyst, "?experiment_key=pricing_cta_test&sequential=true")[0]["analysis"]
    assert sequential["sequential"] is True


def test_sessions_seen_in_two_variants_are_counted_and_excluded_from_analysis(client, analyst, clean_clickhouse):
    h = "homepage_hero_test"
    insert(
        clean_clickhouse,
        [
            (h, "control", "both", "impression", None, NOW),
            (h, "tiny_gang_social_proof", "both", "impression", None, NOW),
            (h, "control", "c1", "impression", None, NOW),
            (h, "tiny_gang_social_proof", "t1", "impression", None, NOW),
        ],
    )
    body = results(client, analyst, f"?experiment_key={h}")[0]
    assert [v["impressions"] for v in body["variants"]] == [2, 2]
    assert body["analysis"]["multi_variant_sessions"]["count"] == 1
    assert [v["sessions"] for v in body["analysis"]["variants"]] == [1, 1]


def test_empty_experiment_has_a_clean_analysis(client, analyst):
    body = results(client, analyst, "?experiment_key=homepage_hero_test")[0]
    json.dumps(body, allow_nan=False)
    assert body["analysis"]["variants"][1]["status"] == "not enough data"


def test_archived_experiment_keeps_its_results(client, settings, analyst, clean_clickhouse):
    insert(clean_clickhouse, [("pricing_cta_test", "control", "s1", "impression", None, NOW)])
    assert client.delete("/api/admin/experiments/pricing_cta_test", headers=auth(settings)).status_code == 200
    assert [e["experiment_key"] for e in results(client, analyst)] == ["homepage_hero_test"]
    archived = results(client, analyst, "?experiment_key=pricing_cta_test")[0]
    assert archived["archived"] is True and archived["variants"][0]["impressions"] == 1


def test_timeseries_is_cumulative_per_bucket(client, analyst, clean_clickhouse):
    p = "pricing_cta_test"
    day1, day2 = NOW - timedelta(days=2), NOW - timedelta(days=1)
    insert(
        clean_clickhouse,
        [
            (p, "control", "a", "impression", None, day1),
            (p, "control", "b", "impression", None, day1),
            (p, "control", "a", "conversion", 3.0, day2),
            (p, "control", "c", "impression", None, day2),
            (p, "meet_greet_emphasis", "d", "impression", None, day2),
        ],
    )
    if client.source == "rollup":
        rebuild_rollup(client, client.admin)
    response = client.get(f"/api/v1/experiments/results/timeseries?experiment_key={p}&interval=day", headers=analyst)
    assert response.status_code == 200, response.text
    assert response.headers["x-abacus-source"] == client.source  # whole days: the rollup's, when it runs
    control, treatment = response.json()["variants"]
    # Exposure cohorts: "a" converted on day 2 but was first exposed on day 1, so day 1 counts it.
    assert [(pt["exposed_sessions"], pt["converted_sessions"]) for pt in control["points"]] == [(2, 1), (3, 1)]
    assert control["points"][0]["conversion_rate"] == pytest.approx(1 / 2)
    assert control["points"][1]["conversion_rate"] == pytest.approx(1 / 3)
    assert control["points"][1]["ci_low"] < 1 / 3 < control["points"][1]["ci_high"]
    assert [pt["exposed_sessions"] for pt in treatment["points"]] == [1]
    hourly = client.get(f"/api/v1/experiments/results/timeseries?experiment_key={p}&interval=hour", headers=analyst)
    assert hourly.status_code == 200 and hourly.headers["x-abacus-source"] == client.source  # whole hours too
    hourly_control = hourly.json()["variants"][0]["points"]
    assert [(pt["exposed_sessions"], pt["converted_sessions"]) for pt in hourly_control] == [(2, 1), (3, 1)]
    bad = client.get(f"/api/v1/experiments/results/timeseries?experiment_key={p}&interval=week", headers=analyst)
    assert bad.status_code == 400
    assert client.get("/api/v1/experiments/results/timeseries?experiment_key=nope", headers=analyst).status_code == 404


def test_beacon_to_results_end_to_end_within_two_seconds(client, analyst, clean_clickhouse):
    import time

    started = time.monotonic()
    assert client.post("/api/experiments/impression", json=beacon(event_name="impression", event_id="e2e-1")).json()["accepted"]
    wait_for(
        lambda: results(client, analyst, "?experiment_key=homepage_hero_test")[0]["variants"][0]["impressions"] == 1, timeout=5
    )
    assert time.monotonic() - started < 2.5
    assert count_events(clean_clickhouse) == 1
