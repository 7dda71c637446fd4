"""`abacus ingest` (RSGI) under the same client-time limits as serve (issue 11): a body that stops
arriving is a 408, a silent connection is closed at the header timeout, HEAD answers like GET."""

from __future__ import annotations

import socket
import sys
import time

import httpx
import pytest
import redis

from bench.common import free_port, publish_seed_registry
from tests.test_ingest_rsgi import start, stop

pytestmark = pytest.mark.slow


def test_ingest_answers_408_to_a_stalled_body_and_closes_silent_connections(redis_url):
    url = redis_url.rsplit("/", 1)[0] + "/8"
    redis.Redis.from_url(url).flushdb()
    publish_seed_registry(url)
    port = free_port()
    env = {"ABACUS_REDIS_URL": url, "ABACUS_HTTP_BODY_TIMEOUT_MS": "1000", "ABACUS_HTTP_HEADER_TIMEOUT_MS": "1000"}
    process = start([sys.executable, "-m", "abacus.cli", "ingest", "--port", str(port)], env, port)
    try:
        stalled = socket.create_connection(("127.0.0.1", port))
        silent = socket.create_connection(("127.0.0.1", port))
        started = time.monotonic()
        stalled.sendall(b'POST /api/experiments/event HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{"experiment_key"')
        stalled.settimeout(10)
        assert stalled.recv(200).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < 5
        silent.settimeout(10)
        assert silent.recv(200) == b""  # closed by the server, not by our timeout
        head = httpx.head(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert head.status_code == 200 and head.content == b""
    finally:
        stop(process)
        redis.Redis.from_url(url).flushdb()
