"""A real `abacus serve` under connection floods (issue 11): silent connections, slowloris headers
and bodies that never finish are held open (and reopened when the server closes them, as an
attacker would) while a normal visitor keeps sending beacons and must keep getting timely 202s."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import httpx
import pytest

from tests.helpers import BROWSER_UA, beacon
from tests.live_serve import free_port, start_serve, stop_serve

pytestmark = pytest.mark.slow

IDLE, SLOWLORIS, UNFINISHED_BODIES = 300, 100, 50  # 450 > the 128 connections that stopped serve
HEADER_TIMEOUT_MS, BODY_TIMEOUT_MS = 1500, 2000


class Flood:
    """Keeps ``IDLE + SLOWLORIS + UNFINISHED_BODIES`` hostile connections open on one event loop."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.events: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _run(self) -> None:
        kinds = ["idle"] * IDLE + ["slowloris"] * SLOWLORIS + ["body"] * UNFINISHED_BODIES
        await asyncio.gather(*(self._hold(kind) for kind in kinds))

    async def _hold(self, kind: str) -> None:
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            self.events[f"{kind} opened"] += 1
            try:
                if kind == "body":
                    writer.write(
                        b"POST /api/experiments/event HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b'Content-Length: 1000\r\n\r\n{"experiment_key"'
                    )
                elif kind == "slowloris":
                    writer.write(b"POST /api/experiments/event HTTP/1.1\r\n")
                answer = await self._wait(reader, writer, drip=kind == "slowloris")
                self.events[f"{kind} {answer}"] += 1
            except OSError:
                self.events[f"{kind} reset"] += 1
            finally:
                writer.close()

    async def _wait(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, drip: bool) -> str:
        """Until the server answers or closes; a slowloris sends one header byte every 0.2 s."""
        while not self._stop.is_set():
            if drip:
                writer.write(b"X")
            try:
                data = await asyncio.wait_for(reader.read(200), 0.2)
            except asyncio.TimeoutError:
                continue
            if not data:
                return "closed"
            return "answered " + data.split(b" ", 2)[1].decode()
        return "held"


def test_serve_keeps_answering_new_visitors_under_idle_slowloris_and_unfinished_body_floods(tmp_path):
    port = free_port()
    serve = start_serve(
        tmp_path / "data",
        port,
        {"ABACUS_HTTP_HEADER_TIMEOUT_MS": str(HEADER_TIMEOUT_MS), "ABACUS_HTTP_BODY_TIMEOUT_MS": str(BODY_TIMEOUT_MS)},
    )
    latencies, statuses = [], Counter()
    try:
        with Flood(port) as flood:
            while sum(flood.events[f"{k} opened"] for k in ("idle", "slowloris", "body")) < IDLE + SLOWLORIS + UNFINISHED_BODIES:
                time.sleep(0.05)
            with httpx.Client(headers={"user-agent": BROWSER_UA}, timeout=3) as visitor:
                deadline = time.monotonic() + 3 * BODY_TIMEOUT_MS / 1000  # across several rounds of timeouts
                n = 0
                while time.monotonic() < deadline:
                    n += 1
                    started = time.monotonic()
                    try:
                        response = visitor.post(
                            f"http://127.0.0.1:{port}/api/experiments/event",
                            json=beacon(event_id=f"flood-{n}", session_id=f"flood-{n}"),
                        )
                        statuses[response.status_code] += 1
                    except httpx.HTTPError as exc:
                        statuses[type(exc).__name__] += 1
                    latencies.append(time.monotonic() - started)
                    time.sleep(0.02)
            events = dict(flood.events)
    finally:
        assert stop_serve(serve) == 0
    assert statuses == {202: len(latencies)}, statuses
    latencies.sort()
    assert latencies[-1] < 2.0 and latencies[len(latencies) // 2] < 0.5, (latencies[len(latencies) // 2], latencies[-1])
    # The server itself ended the hostile connections: silent and slowloris ones at the header
    # timeout, unfinished bodies with a 408 at the body timeout.
    assert events.get("idle closed", 0) >= IDLE, events
    assert events.get("slowloris closed", 0) >= SLOWLORIS, events
    assert events.get("body answered 408", 0) >= UNFINISHED_BODIES, events
