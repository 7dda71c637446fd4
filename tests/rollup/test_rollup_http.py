"""The rollup through `abacus serve` over HTTP: beacons reach the rollup's results, and its admin
endpoints are for admins only."""

from __future__ import annotations

import dataclasses
import time

import msgspec

from shared import redis_keys
from tests.conftest import wait_for
from tests.helpers import auth, beacon, serve_client


def test_beacons_are_counted_in_rollup_results(settings, redis_client):
    with serve_client(settings) as client:
        analyst = auth(settings, "analyst", "ana")
        sessions = [f"session_{i:04d}" for i in range(20)]
        batch = [beacon(session_id=s, event_name="impression", variant_key="control") for s in sessions]
        batch += [beacon(session_id=s, event_name="conversion", value=5.0, variant_key="control") for s in sessions[:5]]
        assert client.post("/api/experiments/batch", json=batch).status_code == 202

        def counted():
            response = client.get("/api/v1/experiments/results?experiment_key=homepage_hero_test", headers=analyst)
            control = response.json()[0]["variants"][0]
            return response.headers["x-abacus-source"] == "rollup" and control["unique_sessions"] == 20 and control

        control = wait_for(counted, timeout=15)
        assert control["impressions"] == 20 and control["conversions"] == 5
        assert control["conversion_rate"] == 0.25 and control["conversion_value_total"] == 25.0


def test_results_come_from_events_when_no_roller_runs(settings, redis_client):
    with serve_client(dataclasses.replace(settings, rollup=False)) as client:
        analyst = auth(settings, "analyst", "ana")
        response = client.get("/api/v1/experiments/results", headers=analyst)
        assert response.status_code == 200 and response.headers["x-abacus-source"] == "events"
        status = client.get("/api/v1/admin/rollup", headers=auth(settings, "admin")).json()
        assert status == {
            "live": False,
            "built": False,
            "roller_running": False,
            "behind_ms": None,
            "unfolded_events": None,
            "unfolded_exact": True,
            "max_lag_ms": settings.rollup_max_lag_ms,
            "rebuild_requested": False,
            "shards": 1,
        }


def test_rollup_admin_endpoints_need_an_admin(settings, redis_client):
    with serve_client(dataclasses.replace(settings, rollup=False)) as client:
        for method, path in (("GET", "/api/v1/admin/rollup"), ("POST", "/api/v1/admin/rollup/rebuild")):
            assert client.request(method, path).status_code == 401
            assert client.request(method, path, headers=auth(settings, "analyst", "ana")).status_code == 403
        assert not redis_client.exists(redis_keys.ROLLUP_REBUILD)
        response = client.post("/api/v1/admin/rollup/rebuild", headers=auth(settings, "admin"))
        assert response.status_code == 202 and response.json()["rebuild_requested"] is True
        assert redis_client.exists(redis_keys.ROLLUP_REBUILD)


def test_events_stored_but_not_folded_send_results_to_the_events_once_older_than_the_lag(settings, redis_client):
    import random

    from tests.rollup.test_freshness import store_without_acknowledging
    from tests.rollup.test_roller import publish, random_events

    events = [
        msgspec.structs.replace(
            event, experiment_key="homepage_hero_test", variant_key="control", received_at_ms=int(time.time() * 1000)
        )
        for event in random_events(random.Random(79), 40)
    ]
    publish(redis_client, settings, events)
    # A worker stores them and dies before acknowledging; nobody claims them during the test.
    settings = dataclasses.replace(settings, rollup_max_lag_ms=300, claim_idle_ms=600_000)
    from shared.clickhouse import ClickHouse

    clickhouse = ClickHouse(settings.clickhouse_url or "")
    stored = store_without_acknowledging(settings, clickhouse)
    with serve_client(settings) as client:
        analyst, admin = auth(settings, "analyst", "ana"), auth(settings, "admin")
        status = wait_for(lambda: (s := client.get("/api/v1/admin/rollup", headers=admin).json())["built"] and s)
        assert status["unfolded_events"] == stored and status["unfolded_exact"], "stored, pending: not folded"
        time.sleep(0.4)
        status = client.get("/api/v1/admin/rollup", headers=admin).json()
        assert status["live"] is False and status["roller_running"] is True and status["behind_ms"] >= 300
        response = client.get("/api/v1/experiments/results?experiment_key=homepage_hero_test", headers=analyst)
        assert response.headers["x-abacus-source"] == "events"
        assert response.headers["x-abacus-unfolded-events"] == "0", "computed from everything stored"
        counted = sum(v["impressions"] + v["cta_clicks"] + v["conversions"] for v in response.json()[0]["variants"])
        assert counted == sum(1 for e in events if e.event_type in ("impression", "cta_click", "conversion")) > 0


def test_results_headers_say_what_the_rollup_has_not_folded(settings, redis_client):
    with serve_client(settings) as client:
        analyst = auth(settings, "analyst", "ana")
        assert client.post("/api/experiments/impression", json=beacon(event_name="impression")).status_code == 202

        def answer():
            response = client.get("/api/v1/experiments/results?experiment_key=homepage_hero_test", headers=analyst)
            impressions = response.json()[0]["variants"][0]["impressions"]
            unfolded = int(response.headers["x-abacus-unfolded-events"])
            # (The bookmark moves just after a step's inserts land: for a moment the gap may be
            # over-stated, never under-stated.)
            return response.headers["x-abacus-source"] == "rollup" and impressions == 1 and unfolded == 0 and response

        response = wait_for(answer, timeout=15)
        assert response.headers["x-abacus-behind-ms"] == "0"


def test_results_still_answer_from_the_events_when_redis_is_down(settings, redis_client):
    import redis as redis_py
    from litestar.testing import TestClient

    from abacus.serve import create_serve_app

    app = create_serve_app(settings)
    litestar_app = app
    while not hasattr(litestar_app, "state"):  # under the HEAD, body-deadline, CORS, ingest-edge and metrics wrappers
        litestar_app = litestar_app.app
    with TestClient(app=app, raise_server_exceptions=False) as client:  # type: ignore[arg-type]
        # The query API's Redis goes away (the rest of the app keeps its own connections).
        litestar_app.state.query_service.redis = redis_py.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
        response = client.get("/api/v1/experiments/results", headers=auth(settings, "analyst", "ana"))
        assert response.status_code == 200 and response.headers["x-abacus-source"] == "events"
        status = client.get("/api/v1/admin/rollup", headers=auth(settings, "admin"))
        assert status.status_code == 503 and status.headers["retry-after"] == "1"
