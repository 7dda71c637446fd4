"""Unexpected failures in the query API answer the common error shape: a 500 with
`{"ok": false, "error": "internal error"}` (nothing internal in the body, the traceback in the
log), and ClickHouse unreachable is a 503 with Retry-After, as Redis unavailable is."""

from __future__ import annotations

import logging

import pytest
from clickhouse_connect.driver.exceptions import OperationalError

import query_api.results_routes as results_routes
from tests.helpers import auth, serve_client


@pytest.fixture()
def client(settings):
    with serve_client(settings) as test_client:
        yield test_client


def failing(exc: Exception):
    def fetch(*_args, **_kwargs):
        raise exc

    return fetch


def test_an_unexpected_exception_is_a_logged_500_in_the_common_shape(client, settings, monkeypatch, caplog):
    monkeypatch.setattr(results_routes, "fetch_rollups", failing(ZeroDivisionError("secret internals")))
    monkeypatch.setattr(results_routes, "fetch_rollup_totals", failing(ZeroDivisionError("secret internals")))
    with caplog.at_level(logging.ERROR):
        response = client.get("/api/v1/experiments/results?experiment_key=homepage_hero_test", headers=auth(settings, "analyst"))
    assert response.status_code == 500
    assert response.json() == {"ok": False, "error": "internal error", "field": None}
    assert "secret internals" not in response.text
    logged = [r for r in caplog.records if r.name == "query_api.errors" and r.exc_info]
    assert logged and logged[0].exc_info[0] is ZeroDivisionError
    assert "/api/v1/experiments/results" in logged[0].getMessage()


def test_clickhouse_unreachable_is_a_503_to_retry(client, settings, monkeypatch):
    down = OperationalError("HTTPDriver for http://clickhouse:8123 received ClickHouse error: connection refused")
    monkeypatch.setattr(results_routes, "fetch_rollups", failing(down))
    monkeypatch.setattr(results_routes, "fetch_rollup_totals", failing(down))
    response = client.get("/api/v1/experiments/results?experiment_key=homepage_hero_test", headers=auth(settings, "analyst"))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"ok": False, "error": "ClickHouse unavailable; retry later", "field": None}


def test_client_mistakes_keep_their_4xx(client, settings):
    assert client.get("/api/v1/experiments/results").status_code == 401
    response = client.get("/api/v1/experiments/results?confidence=2", headers=auth(settings, "analyst"))
    assert response.status_code == 400 and response.json()["field"] == "confidence"
