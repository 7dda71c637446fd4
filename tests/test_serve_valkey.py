"""The embedded Valkey of a real `abacus serve` (issue 11): it wants a password nobody else can
read, its files are the owner's only, a Valkey that dies is restarted, and one that cannot be
restarted ends serve non-zero while /healthz says so."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import threading
import time

import httpx
import pytest
import redis

from tests.conftest import wait_for
from tests.helpers import BROWSER_UA, beacon
from tests.live_serve import free_port, mint_token, serve_output, start_serve, stop_serve
from tests.test_serve_process import impressions, pid_alive, valkey_pid

pytestmark = pytest.mark.slow


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def valkey_port(data_dir) -> int:
    return json.loads((data_dir / "valkey" / "abacus-valkey.json").read_text())["port"]


def post_beacon(port: int, n: int) -> int:
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/api/experiments/event",
            json=beacon(event_name="impression", event_id=f"v-{n}", session_id=f"v-{n}"),
            headers={"user-agent": BROWSER_UA},
            timeout=5,
        )
    except httpx.HTTPError:
        return 0
    return response.status_code


def test_embedded_valkey_needs_the_password_and_every_file_is_the_owners_only(tmp_path):
    data_dir, port = tmp_path / "data", free_port()
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    (data_dir / "jwt-secret").write_text("s" * 48 + "\n")
    (data_dir / "jwt-secret").chmod(0o644)
    serve = start_serve(data_dir, port)
    try:
        assert post_beacon(port, 1) == 202
        anonymous = redis.Redis(port=valkey_port(data_dir))
        with pytest.raises(redis.AuthenticationError):
            anonymous.get("abacus:registry:snapshot")
        with pytest.raises(redis.AuthenticationError):
            anonymous.set("abacus:registry:snapshot", b"{}")
        password = (data_dir / "valkey-password").read_text().strip()
        assert len(password) >= 32
        owner = redis.Redis(port=valkey_port(data_dir), password=password)
        assert owner.exists("abacus:registry:snapshot") == 1
        assert mode(data_dir) == 0o700
        assert mode(data_dir / "valkey") == 0o700
        assert mode(data_dir / "valkey-password") == 0o600
        assert mode(data_dir / "jwt-secret") == 0o600, "a pre-existing wider secret file must be tightened"
        files = [p for p in (data_dir / "valkey").rglob("*") if p.is_file()]
        assert any("appendonly" in p.name or "aof" in p.name for p in files), files
        assert {str(p): mode(p) for p in files if mode(p) != 0o600} == {}
        assert {str(p): mode(p) for p in (data_dir / "valkey").rglob("*") if p.is_dir() and mode(p) != 0o700} == {}
    finally:
        assert stop_serve(serve) == 0


def test_a_killed_valkey_is_restarted_and_nothing_acknowledged_is_lost(tmp_path):
    data_dir, port = tmp_path / "data", free_port()
    serve = start_serve(data_dir, port)
    try:
        acknowledged = sum(post_beacon(port, n) == 202 for n in range(20))
        assert acknowledged == 20
        first = valkey_pid(data_dir)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 15
        n = 100
        while post_beacon(port, n) != 202:
            assert time.monotonic() < deadline, "beacons still refused 15 s after Valkey was killed"
            n += 1
            time.sleep(0.1)
        assert valkey_pid(data_dir) != first and pid_alive(valkey_pid(data_dir))
        # Valkey may answer beacons a moment before the supervisor's own check has seen it back.
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200, timeout=5)
        token = mint_token(data_dir)
        deadline = time.monotonic() + 30
        while impressions(port, token) < acknowledged + 1 and time.monotonic() < deadline:
            time.sleep(0.3)
        # Every 202 before the kill and the first one after it; refused ones may count too (a 503
        # means "maybe"), at most the attempts made while Valkey was down.
        assert acknowledged + 1 <= impressions(port, token) <= acknowledged + 1 + (n - 100)
    finally:
        assert stop_serve(serve) == 0


def test_a_valkey_that_cannot_be_restarted_fails_healthz_and_ends_serve_non_zero(tmp_path):
    data_dir, port = tmp_path / "data", free_port()
    serve = start_serve(data_dir, port)
    blocker = socket.socket()
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        taken = valkey_port(data_dir)
        os.kill(valkey_pid(data_dir), signal.SIGKILL)
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 2
        while True:  # take Valkey's port the moment it is free, so every restart fails
            try:
                blocker.bind(("127.0.0.1", taken))
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.001)
        blocker.listen()

        def refuse() -> None:  # what a dead server's port does: every connection ends at once
            while True:
                try:
                    connection, _ = blocker.accept()
                except OSError:
                    return
                connection.close()

        threading.Thread(target=refuse, daemon=True).start()
        unhealthy = None
        deadline = time.monotonic() + 5
        while unhealthy is None and time.monotonic() < deadline:
            response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            if response.status_code != 200:
                unhealthy = response
            time.sleep(0.1)
        assert unhealthy is not None, "/healthz said ok while Valkey was gone"
        assert unhealthy.status_code == 503 and "valkey" in unhealthy.json()["problems"]
        assert serve.wait(40) == 1, serve_output(serve)[-3000:]
    finally:
        blocker.close()
        if serve.poll() is None:
            serve.kill()
            serve.wait()
