"""Ingest over HTTP against real Valkey and chDB: every bad-input row, drops, dedup, CORS."""

from __future__ import annotations

import json

import pytest

from tests.conftest import count_events, wait_for
from tests.helpers import BROWSER_UA, auth, beacon, serve_client, wait_until_rolled_up

EVENT = "/api/experiments/event"
IMPRESSION = "/api/experiments/impression"
BATCH = "/api/experiments/batch"


@pytest.fixture()
def client(settings):
    with serve_client(settings) as test_client:
        yield test_client


def stream_length(redis_client, settings) -> int:
    return redis_client.xlen(settings.stream) if redis_client.exists(settings.stream) else 0


def events_in_stream(redis_client, settings) -> int:
    import msgspec

    from shared.wire import StreamEnvelope

    entries = redis_client.xrange(settings.stream) if redis_client.exists(settings.stream) else []
    return sum(len(msgspec.msgpack.decode(fields[b"e"], type=StreamEnvelope).events) for _, fields in entries)


def test_accepted_beacon_is_202_with_exact_body_and_lands_in_clickhouse(client, clean_clickhouse):
    response = client.post(EVENT, json=beacon(metadata={"element": "Explore", "slot": 2, "above_fold": True, "x": 1.5}))
    assert response.status_code == 202
    assert response.content == b'{"ok":true,"accepted":true}'
    assert "x-abacus-reason" not in response.headers
    wait_for(lambda: count_events(clean_clickhouse) == 1)
    row = (
        clean_clickhouse.client()
        .query(
            "SELECT experiment_key, variant_key, session_id, event_type, path, metadata, client_ts IS NOT NULL, length(event_id) "
            "FROM abacus.events"
        )
        .result_rows[0]
    )
    assert row[:5] == ("homepage_hero_test", "control", "session_abcd1234", "cta_click", "/")
    assert json.loads(row[5]) == {"element": "Explore", "slot": 2, "above_fold": True, "x": 1.5}
    assert row[6] == 1 and row[7] == 32  # a generated event id


def test_client_timestamp_is_stored_in_utc_with_its_milliseconds(client, clean_clickhouse):
    stamps = {"s-offset": "2026-11-25T12:00:00.250+01:00", "s-naive": "2026-11-25T12:00:00.125", "s-none": None}
    batch = [beacon(session_id=session, timestamp=stamp, event_name="impression") for session, stamp in stamps.items()]
    assert client.post(BATCH, json=batch).json()["accepted"] == 3
    wait_for(lambda: count_events(clean_clickhouse) == 3)
    rows = dict(
        clean_clickhouse.client().query("SELECT session_id, toUnixTimestamp64Milli(client_ts) FROM abacus.events").result_rows
    )
    assert rows["s-offset"] == 1_795_604_400_250  # 11:00:00.250 UTC
    assert rows["s-naive"] == 1_795_608_000_125  # no offset: taken as UTC
    assert rows["s-none"] is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("experiment_key", None),
        ("experiment_key", ""),
        ("experiment_key", 5),
        ("variant_key", "v" * 65),
        ("session_id", "has space"),
        ("session_id", "s" * 129),
        ("session_id", ""),
        ("path", "no-leading-slash"),
        ("path", "/" + "a" * 2048),
        ("event_name", "Bad-Name"),
        ("event_name", "1starts_with_digit"),
        ("event_name", "a" * 65),
        ("timestamp", "yesterday"),
        ("timestamp", "3000-01-01T00:00:00Z"),
        ("metadata", {"nested": {"a": 1}}),
        ("metadata", ["not", "an", "object"]),
        ("metadata", {f"k{i}": i for i in range(33)}),
        ("metadata", {"big": "x" * 4100}),
        ("value", -1),
        ("value", "12"),
        ("value", True),
        ("event_id", "e" * 65),
    ],
)
def test_schema_violation_is_400_naming_the_field_and_stores_nothing(client, redis_client, settings, field, value):
    body = beacon(**{field: value})
    if value is None:
        body.pop(field, None)
    response = client.post(EVENT, json=body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["ok"] is False
    assert field in error["error"]
    assert error["field"] is not None and error["field"].startswith(f"$.{field}")
    assert stream_length(redis_client, settings) == 0


@pytest.mark.parametrize("body", [b"{", b"not json", b"", b"   ", b"[]", b"null", b'{"experiment_key": "a"} trailing'])
def test_malformed_json_is_400(client, redis_client, settings, body):
    response = client.post(EVENT, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["ok"] is False
    assert stream_length(redis_client, settings) == 0


def test_custom_event_names_and_values_are_accepted(client, clean_clickhouse):
    assert client.post(EVENT, json=beacon(event_name="video_play")).json() == {"ok": True, "accepted": True}
    assert client.post(EVENT, json=beacon(event_name="conversion", value=12.5)).json()["accepted"] is True
    wait_for(lambda: count_events(clean_clickhouse) == 2)
    assert count_events(clean_clickhouse, "event_type = 'conversion' AND conversion_value = 12.5") == 1


def test_body_over_64kb_is_413(client, redis_client, settings):
    body = json.dumps(beacon(path="/" + "a" * 70_000)).encode()
    response = client.post(EVENT, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert stream_length(redis_client, settings) == 0


def test_batch_over_1mb_is_413_and_just_under_is_fine(client):
    item = beacon(metadata={"pad": "x" * 3000})
    too_big = json.dumps([item] * 400).encode()
    assert len(too_big) > 1024 * 1024
    assert client.post(BATCH, content=too_big, headers={"content-type": "application/json"}).status_code == 413
    fine = [beacon(metadata={"pad": "x" * 1000}) for _ in range(300)]
    response = client.post(BATCH, json=fine)
    assert response.status_code == 202
    assert response.json() == {"ok": True, "accepted": 300, "rejected": 0}


def test_batch_over_500_items_is_400(client, redis_client, settings):
    response = client.post(BATCH, json=[beacon() for _ in range(501)])
    assert response.status_code == 400
    assert stream_length(redis_client, settings) == 0


def test_batch_with_invalid_items_keeps_the_valid_ones_and_names_each_invalid_one(client, clean_clickhouse):
    # Issue 11: one bad item used to refuse the whole batch, losing every good event beside it.
    items = [
        beacon(session_id="ok-1"),
        beacon(session_id=7),
        beacon(session_id="ok-2"),
        beacon(session_id="ok-3"),
        beacon(session_id="bad id"),
    ]
    response = client.post(BATCH, json=items)
    assert response.status_code == 202
    assert response.json() == {
        "ok": True,
        "accepted": 3,
        "rejected": 2,
        "errors": [
            {"index": 1, "error": "Expected `str`, got `int`", "field": "$[1].session_id"},
            {"index": 4, "error": "Expected `str` matching regex '^[A-Za-z0-9_.:-]{1,128}$'", "field": "$[4].session_id"},
        ],
    }
    wait_for(lambda: count_events(clean_clickhouse) == 3)
    assert count_events(clean_clickhouse, "session_id IN ('ok-1', 'ok-2', 'ok-3')") == 3


def test_batch_error_list_is_bounded_but_every_invalid_item_is_counted(client):
    from ingest.request import MAX_REPORTED_ERRORS

    response = client.post(BATCH, json=[beacon(path="relative")] * 100 + [beacon()])
    body = response.json()
    assert response.status_code == 202 and body["accepted"] == 1 and body["rejected"] == 100
    assert [e["index"] for e in body["errors"]] == list(range(MAX_REPORTED_ERRORS))


@pytest.mark.parametrize("body", [b'{"experiment_key": "x"}', b"[1, 2]", b'[{"a": 1}, "text"]', b"[{]"])
def test_a_batch_that_is_not_an_array_of_objects_is_refused_whole(client, redis_client, settings, body):
    response = client.post(BATCH, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["ok"] is False
    assert stream_length(redis_client, settings) == 0


def test_batch_counts_accepted_and_rejected(client, clean_clickhouse):
    items = [
        beacon(),
        beacon(event_name="impression"),
        beacon(experiment_key="nope"),
        beacon(variant_key="nope"),
    ]
    response = client.post(BATCH, json=items)
    assert response.status_code == 202
    assert response.json() == {"ok": True, "accepted": 2, "rejected": 2}
    assert response.headers["x-abacus-reason"] == "unknown_experiment,unknown_variant"
    wait_for(lambda: count_events(clean_clickhouse) == 2)


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"]
)
def test_other_media_types_are_415(client, content_type, redis_client, settings):
    response = client.post(EVENT, content=json.dumps(beacon()).encode(), headers={"content-type": content_type})
    assert response.status_code == 415
    assert stream_length(redis_client, settings) == 0


def test_text_plain_from_send_beacon_is_accepted(client, clean_clickhouse):
    response = client.post(EVENT, content=json.dumps(beacon()).encode(), headers={"content-type": "text/plain;charset=UTF-8"})
    assert response.status_code == 202
    assert response.json() == {"ok": True, "accepted": True}
    wait_for(lambda: count_events(clean_clickhouse) == 1)


def test_get_on_a_beacon_path_is_405(client):
    response = client.get(EVENT)
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]


def test_impression_endpoint_defaults_and_restricts_event_name(client, clean_clickhouse):
    without_name = beacon()
    without_name.pop("event_name")
    assert client.post(IMPRESSION, json=without_name).json() == {"ok": True, "accepted": True}
    assert client.post(IMPRESSION, json=beacon(event_name="impression")).status_code == 202
    wrong = client.post(IMPRESSION, json=beacon(event_name="cta_click"))
    assert wrong.status_code == 400
    assert wrong.json()["field"] == "$.event_name"
    wait_for(lambda: count_events(clean_clickhouse, "event_type = 'impression'") == 2)


def test_retried_beacon_with_same_event_id_counts_once(client, clean_clickhouse, redis_client, settings):
    body = beacon(event_id="retry-me-1", event_name="conversion", value=3.0)
    for _ in range(3):
        assert client.post(EVENT, json=body).json()["accepted"] is True
    client.post(BATCH, json=[body, body])
    wait_for(lambda: count_events(clean_clickhouse, "1") == 1 and _raw_at_least(clean_clickhouse, 1))
    wait_until_rolled_up(redis_client, settings.stream)  # results read the rollup, which trails
    results = client.get("/api/v1/experiments/results?experiment_key=homepage_hero_test", headers=auth(settings)).json()
    control = results[0]["variants"][0]
    assert control["conversions"] == 1
    assert control["conversion_value_total"] == 3.0


def _raw_at_least(clickhouse, n: int) -> bool:
    return clickhouse.client().query("SELECT count() FROM abacus.events").result_rows[0][0] >= n


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"experiment_key": "no_such_experiment"}, "unknown_experiment"),
        ({"variant_key": "no_such_variant"}, "unknown_variant"),
    ],
)
def test_unknown_experiment_or_variant_is_dropped_with_reason(client, redis_client, settings, overrides, reason):
    response = client.post(EVENT, json=beacon(**overrides))
    assert response.status_code == 202
    assert response.json() == {"ok": True, "accepted": False}
    assert response.headers["x-abacus-reason"] == reason
    assert stream_length(redis_client, settings) == 0
    metrics = client.get("/metrics").text
    assert f'abacus_ingest_dropped_total{{reason="{reason}"}} 1' in metrics


def test_disabled_experiment_is_dropped(client, redis_client, settings):
    definition = client.get("/api/admin/experiments/pricing_cta_test", headers=auth(settings)).json()
    fields = {k: definition[k] for k in ("name", "description", "cookie_name", "eligible_routes", "variants")}
    assert (
        client.put(
            "/api/admin/experiments/pricing_cta_test", json={**fields, "enabled": False}, headers=auth(settings)
        ).status_code
        == 200
    )
    response = client.post(EVENT, json=beacon(experiment_key="pricing_cta_test", variant_key="control", path="/our-pricing"))
    assert response.json() == {"ok": True, "accepted": False}
    assert response.headers["x-abacus-reason"] == "experiment_disabled"
    assert stream_length(redis_client, settings) == 0


def test_kill_switch_drops_every_beacon(client, redis_client, settings):
    assert client.put("/api/admin/settings", json={"experiments_enabled": False}, headers=auth(settings)).status_code == 200
    response = client.post(EVENT, json=beacon())
    assert response.json() == {"ok": True, "accepted": False}
    assert response.headers["x-abacus-reason"] == "experiments_disabled"
    assert client.post(BATCH, json=[beacon(), beacon()]).json() == {"ok": True, "accepted": 0, "rejected": 2}
    assert stream_length(redis_client, settings) == 0


BOTS = [
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "",
]
HUMANS = [
    BROWSER_UA,
    "Mozilla/5.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.41.104;FBBV/612345678]",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36 Instagram 337.0.0.35.102 Android",
]


@pytest.mark.parametrize("user_agent", BOTS)
def test_bots_are_dropped_over_http(client, redis_client, settings, user_agent):
    response = client.post(IMPRESSION, json=beacon(event_name="impression"), headers={"user-agent": user_agent})
    assert response.status_code == 202
    assert response.json() == {"ok": True, "accepted": False}
    assert response.headers["x-abacus-reason"] == "bot"
    assert stream_length(redis_client, settings) == 0


@pytest.mark.parametrize("user_agent", HUMANS)
def test_humans_are_accepted_over_http(client, redis_client, settings, user_agent):
    response = client.post(EVENT, json=beacon(), headers={"user-agent": user_agent})
    assert response.json() == {"ok": True, "accepted": True}
    assert events_in_stream(redis_client, settings) == 1


def test_missing_user_agent_is_a_bot(settings):
    with serve_client(settings) as test_client:
        del test_client.headers["user-agent"]
        response = test_client.post(EVENT, json=beacon())
    assert response.headers["x-abacus-reason"] == "bot"


def test_cors_preflight_and_headers_follow_the_allow_list(client):
    allowed = {"origin": "https://site.example", "access-control-request-method": "POST"}
    preflight = client.options(EVENT, headers=allowed)
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://site.example"
    refused = client.options(EVENT, headers={**allowed, "origin": "https://evil.example"})
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers
    post = client.post(EVENT, json=beacon(), headers={"origin": "https://site.example"})
    assert post.headers["access-control-allow-origin"] == "https://site.example"
    other = client.post(EVENT, json=beacon(), headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_metrics_count_accepted_and_dropped(client):
    client.post(EVENT, json=beacon())
    client.post(EVENT, json=beacon(), headers={"user-agent": "Googlebot/2.1"})
    metrics = client.get("/metrics").text
    assert "abacus_ingest_accepted_total 1" in metrics
    assert 'abacus_ingest_dropped_total{reason="bot"} 1' in metrics


def test_generated_event_ids_differ_between_endpoints_and_processes():
    from ingest.steps import EventIds, event_id

    first, second = EventIds(), EventIds()
    ids = {first.next() for _ in range(1000)} | {second.next() for _ in range(1000)}
    assert len(ids) == 2000
    assert first.next()[:16] != second.next()[:16]
    # The beacons of one batch share a request prefix and differ by their index.
    batch = [event_id(prefix, i) for prefix in (first.for_request(), first.for_request()) for i in range(500)]
    assert len(set(batch)) == 1000 and {len(i) for i in batch} == {32}


def test_an_append_too_few_replicas_confirmed_is_a_503_counted_on_metrics(settings, redis_client):
    """ABACUS_REDIS_WAIT_REPLICAS=1 against a server with no replica: the beacon is refused with
    Retry-After (it may be on the primary: the client resends the same event_id) and the
    refusal is counted where an operator looks."""
    import dataclasses

    from prometheus_client.parser import text_string_to_metric_families

    def refused(client) -> float:
        families = text_string_to_metric_families(client.get("/metrics").text)
        found = [s.value for f in families for s in f.samples if s.name == "abacus_ingest_wait_refused_total"]
        assert found, "the counter is exported"
        return found[0]

    waiting = dataclasses.replace(settings, redis_wait_replicas=1, redis_wait_timeout_ms=50)
    with serve_client(waiting) as client:
        assert refused(client) == 0
        response = client.post(EVENT, json=beacon())
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"]
        assert response.json()["ok"] is False
        assert refused(client) == 1
