"""Building blocks shared by the HTTP tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from litestar.testing import TestClient

from abacus.serve import create_serve_app
from query_api.auth import mint_token
from shared.settings import Settings
from worker.rows import COLUMNS as _WORKER_COLUMNS

EVENT_COLUMNS = list(_WORKER_COLUMNS)
"""The columns of abacus.events in the order the worker inserts them (for rows a test writes by hand)."""
BROWSER_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"


def beacon(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "experiment_key": "homepage_hero_test",
        "variant_key": "control",
        "session_id": "session_abcd1234",
        "path": "/",
        "event_name": "cta_click",
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def token(settings: Settings, role: str = "admin", sub: str = "alice@example.com") -> str:
    return mint_token(settings.jwt_secret or "", sub, role, dt.timedelta(hours=1))


def auth(settings: Settings, role: str = "admin", sub: str = "alice@example.com") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(settings, role, sub)}"}


@contextmanager
def serve_client(settings: Settings) -> Iterator[TestClient]:
    """The whole `abacus serve` app (ingest, query API, worker thread) over HTTP, in-process."""
    app = create_serve_app(settings)
    with TestClient(app=app, raise_server_exceptions=False) as client:  # type: ignore[arg-type]
        client.headers["user-agent"] = BROWSER_UA
        yield client


def rebuild_rollup(client: TestClient, admin_headers: dict[str, str]) -> None:
    """Rows inserted straight into abacus.events reach the results rollup through a rebuild."""
    from tests.conftest import wait_for

    assert client.post("/api/v1/admin/rollup/rebuild", headers=admin_headers).status_code == 202

    def rebuilt() -> bool:
        status = client.get("/api/v1/admin/rollup", headers=admin_headers).json()
        return status["live"] and not status["rebuild_requested"]

    wait_for(rebuilt)


def wait_until_rolled_up(redis_client, stream: str) -> None:  # type: ignore[no-untyped-def]
    """Until the roller has folded every entry in the stream: results then count all of them."""
    from shared import redis_keys
    from tests.conftest import wait_for

    def entry_id(raw: bytes | str) -> tuple[int, int]:
        ms, _, seq = (raw.decode() if isinstance(raw, bytes) else raw).partition("-")
        return int(ms), int(seq or 0)

    def caught_up() -> bool:
        last = entry_id(redis_client.xinfo_stream(stream)["last-generated-id"])
        for group in redis_client.xinfo_groups(stream):
            name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
            if name == redis_keys.ROLLUP_GROUP:
                return entry_id(group["last-delivered-id"]) >= last
        return False

    wait_for(caught_up)
