"""The eight scenarios of the original backend's experiment tests
(../shared/reference/original_experiment_tests.py), ported to the new architecture: same paths,
status codes and bodies. Direct ExperimentEvent inserts become rows in abacus.events; SiteSettings
rows become the settings API; reading events back reads ClickHouse after the worker flushed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import count_events, wait_for
from tests.helpers import EVENT_COLUMNS, auth, beacon, rebuild_rollup, serve_client


@pytest.fixture()
def client(settings):
    with serve_client(settings) as test_client:
        yield test_client


@pytest.fixture()
def admin_headers(settings):
    return auth(settings, "admin")


def disable_experiments(client, admin_headers) -> None:
    response = client.put("/api/admin/settings", json={"experiments_enabled": False}, headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json()["experiments_enabled"] is False


def test_list_experiments_returns_seeded_registry(client):
    response = client.get("/api/experiments")
    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["experiment_key"] for item in body] == ["homepage_hero_test", "pricing_cta_test"]
    assert body[0]["cookie_name"] == "exp_homepage_hero"
    assert body[0]["variants"][0]["variant_key"] == "control"


def test_ingest_experiment_event_persists_event(client, clean_clickhouse):
    response = client.post(
        "/api/experiments/event",
        json=beacon(metadata={"element": "Explore Pack Walks", "slot": "primary"}),
        headers={"user-agent": "Mozilla/5.0"},
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"ok": True, "accepted": True}
    wait_for(lambda: count_events(clean_clickhouse) == 1)
    rows = (
        clean_clickhouse.client()
        .query("SELECT experiment_key, variant_key, event_type, JSONExtractString(metadata, 'element') FROM abacus.events FINAL")
        .result_rows
    )
    assert rows == [("homepage_hero_test", "control", "cta_click", "Explore Pack Walks")]


def test_ingest_experiment_event_filters_bots(client, clean_clickhouse, redis_client, settings):
    response = client.post(
        "/api/experiments/impression",
        json=beacon(event_name="impression"),
        headers={"user-agent": "Googlebot/2.1"},
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"ok": True, "accepted": False}
    assert not redis_client.exists(settings.stream) or redis_client.xlen(settings.stream) == 0
    assert count_events(clean_clickhouse) == 0


def test_experiment_results_aggregate_by_variant(client, clean_clickhouse, admin_headers):
    now = datetime.now(timezone.utc)
    rows = [
        ("e1", "control", "session-1", "impression", None, now - timedelta(minutes=5)),
        ("e2", "control", "session-1", "cta_click", None, now - timedelta(minutes=4)),
        ("e3", "control", "session-1", "conversion", 1.0, now - timedelta(minutes=3)),
        ("e4", "meet_greet_emphasis", "session-2", "impression", None, now - timedelta(minutes=2)),
        ("e5", "meet_greet_emphasis", "session-3", "impression", None, now - timedelta(minutes=1)),
    ]
    clean_clickhouse.client().insert(
        "abacus.events",
        [
            [eid, "pricing_cta_test", variant, session, kind, "/our-pricing", value, "{}", at, at]
            for eid, variant, session, kind, value, at in rows
        ],
        column_names=EVENT_COLUMNS,
    )
    rebuild_rollup(client, admin_headers)  # rows written by hand, not through the stream
    response = client.get("/api/v1/experiments/results?experiment_key=pricing_cta_test", headers=admin_headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body) == 1
    assert body[0]["experiment_key"] == "pricing_cta_test"
    assert body[0]["variants"][0] == {
        "variant_key": "control",
        "impressions": 1,
        "cta_clicks": 1,
        "form_starts": 0,
        "form_submits": 0,
        "conversions": 1,
        "unique_sessions": 1,
        "conversion_rate": 1.0,
        "conversion_value_total": 1.0,
    }


def test_admin_can_update_backend_managed_experiment_definition(client, admin_headers):
    response = client.put(
        "/api/admin/experiments/homepage_hero_test",
        headers=admin_headers,
        json={
            "cookie_name": "exp_homepage_hero",
            "name": "Homepage hero test",
            "description": "Updated from admin",
            "enabled": False,
            "eligible_routes": ["/", "/contact"],
            "variants": [
                {"variant_key": "control", "label": "Original", "allocation": 20, "is_control": True},
                {"variant_key": "tiny_gang_social_proof", "label": "Social proof", "allocation": 80, "is_control": False},
            ],
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["enabled"] is False
    assert body["eligible_routes"] == ["/", "/contact"]
    assert body["variants"][1]["allocation"] == 80
    public_response = client.get("/api/experiments")
    assert public_response.status_code == 200, public_response.text
    updated = next(item for item in public_response.json() if item["experiment_key"] == "homepage_hero_test")
    assert updated["enabled"] is False
    assert updated["description"] == "Updated from admin"


def test_public_experiments_return_empty_when_globally_disabled(client, admin_headers):
    disable_experiments(client, admin_headers)
    response = client.get("/api/experiments")
    assert response.status_code == 200, response.text
    assert response.json() == []


def test_experiment_ingest_is_ignored_when_globally_disabled(client, admin_headers, clean_clickhouse, redis_client, settings):
    disable_experiments(client, admin_headers)
    response = client.post("/api/experiments/event", json=beacon(), headers={"user-agent": "Mozilla/5.0"})
    assert response.status_code == 202, response.text
    assert response.json() == {"ok": True, "accepted": False}
    assert not redis_client.exists(settings.stream) or redis_client.xlen(settings.stream) == 0
    assert count_events(clean_clickhouse) == 0


def test_admin_experiments_returns_404_when_globally_disabled(client, admin_headers):
    disable_experiments(client, admin_headers)
    response = client.get("/api/admin/experiments", headers=admin_headers)
    assert response.status_code == 404, response.text
