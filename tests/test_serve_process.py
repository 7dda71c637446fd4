"""`abacus serve` as a real process: SIGKILL and restart keep every beacon that got a 202, the
embedded Valkey is reused rather than duplicated, and SIGTERM stops everything cleanly."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.helpers import BROWSER_UA, beacon
from tests.live_serve import free_port, mint_token, start_serve, stop_serve

pytestmark = pytest.mark.slow


def valkey_pid(data_dir: Path) -> int:
    return json.loads((data_dir / "valkey" / "abacus-valkey.json").read_text())["pid"]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")", 1)[1].split()[0] == "Z")


def impressions(port: int, token: str, window: str = "") -> int:
    return results(port, token, window)[0]


def results(port: int, token: str, window: str = "") -> tuple[int, httpx.Headers]:
    response = httpx.get(
        f"http://127.0.0.1:{port}/api/v1/experiments/results?experiment_key=homepage_hero_test{window}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    response.raise_for_status()
    return sum(v["impressions"] for v in response.json()[0]["variants"]), response.headers


# Not whole days, so always computed from the events; every session of the test is in it.
FROM_THE_EVENTS = "&from=1970-01-01T00:00:01Z"


def assert_honest(port: int, token: str) -> int:
    """All-time results either equal what the events hold or say what they have not folded."""
    counted, headers = results(port, token)
    from_events = impressions(port, token, FROM_THE_EVENTS)
    if headers["x-abacus-source"] == "rollup" and headers["x-abacus-unfolded-events"] == "0":
        assert counted == from_events, f"the rollup claimed to be current with {counted} of {from_events}"
    else:
        assert counted <= from_events
    return counted


def test_sigkill_and_restart_keep_every_accepted_beacon(tmp_path):
    data_dir, port = tmp_path / "data", free_port()
    first = start_serve(data_dir, port)
    original_valkey = valkey_pid(data_dir)
    accepted: list[str] = []
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(headers={"user-agent": BROWSER_UA}, timeout=5) as client:
            n = 0
            while not stop.is_set():
                n += 1
                event_id = f"kill-{threading.get_ident()}-{n}"
                body = [
                    beacon(event_name="impression", session_id=f"{event_id}-{i}", event_id=f"{event_id}-{i}") for i in range(5)
                ]
                try:
                    response = client.post(f"http://127.0.0.1:{port}/api/experiments/batch", json=body)
                except httpx.HTTPError:
                    continue
                if response.status_code == 202:
                    accepted.extend(b["event_id"] for b in body)

    senders = [threading.Thread(target=send) for _ in range(4)]
    for sender in senders:
        sender.start()
    time.sleep(random.uniform(1.5, 3.5))  # killed at a random point of the load
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    time.sleep(0.3)
    stop.set()
    for sender in senders:
        sender.join()
    assert len(accepted) > 50, "the load did not get going before the kill"
    assert pid_alive(original_valkey), "the embedded Valkey should outlive a SIGKILLed serve"

    second = start_serve(data_dir, port)
    try:
        assert valkey_pid(data_dir) == original_valkey, "restart must reuse the running Valkey"
        token = mint_token(data_dir)
        deadline = time.monotonic() + 30
        while assert_honest(port, token) < len(accepted) and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(1.0)  # let anything still in the stream land before the upper bound is checked
        counted = assert_honest(port, token)
        # Every 202'd beacon is counted. A request cut off by the kill after Redis acknowledged its
        # entry is counted too (the client just never heard back): at most one request per sender.
        assert len(accepted) <= counted <= len(accepted) + len(senders) * 5
    finally:
        assert stop_serve(second) == 0
    assert not pid_alive(original_valkey), "SIGTERM of serve must stop the embedded Valkey"


def test_second_serve_on_same_data_dir_is_refused_and_sigterm_stops_cleanly(tmp_path):
    data_dir, port = tmp_path / "data", free_port()
    first = start_serve(data_dir, port)
    try:
        valkey = valkey_pid(data_dir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ABACUS_")}
        second = subprocess.run(
            [sys.executable, "-m", "abacus.cli", "serve", "--port", str(free_port()), "--data-dir", str(data_dir)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2
        assert "another `abacus serve`" in second.stderr
        assert valkey_pid(data_dir) == valkey
    finally:
        assert stop_serve(first) == 0
    assert not pid_alive(valkey)
    assert not (data_dir / "valkey" / "abacus-valkey.json").exists()
