"""Freshness: time from a beacon's 202 to the results API counting it, under sustained load.

    .venv/bin/python -m bench.bench_freshness [--rate 5000] [--seconds 30] [--batch 50] [--tiny]

Runs `abacus serve` as a subprocess on a fresh --data-dir (embedded Valkey and chDB, the worker
thread with its configured ABACUS_BATCH_WAIT_MS) and posts --rate beacons/s to
/api/experiments/batch in requests of --batch beacons, on a fixed schedule, for --seconds. Every
beacon is an impression with a unique event_id and session and the time of sending. Meanwhile a
poller reads GET /api/v1/experiments/results every --poll-ms and sums the impressions.

Every request is a sample: when its 202 arrived, C beacons in all had been acknowledged; its
freshness is the time until the first poll sent after that 202 returned a count >= C. That is an
upper bound: it includes up to one poll interval and the poll's own latency (printed).

The baseline is the worker's configured batch wait, the delay a beacon waits by design before
its batch is inserted. The last line is p99 over a --target-s target (default 2 s).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import REPO, free_port, machine, python, wait_http

BROWSER_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
TARGETS = [
    ("homepage_hero_test", "control"),
    ("homepage_hero_test", "tiny_gang_social_proof"),
    ("pricing_cta_test", "control"),
    ("pricing_cta_test", "meet_greet_emphasis"),
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class Run:
    def __init__(self) -> None:
        self.acks: list[tuple[float, int]] = []  # (monotonic time of the 202, beacons it accepted)
        self.polls: list[tuple[float, float, int]] = []  # (sent, returned, impressions visible)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.late_starts = 0
        self.sources: dict[str, int] = {}
        """How many polls were answered from the rollup and how many from the events."""


async def load(base: str, rate: float, seconds: float, batch: int, run: Run) -> None:
    """Requests on a fixed schedule (a late one is sent at once, never skipped)."""
    tag = secrets.token_hex(4)
    interval = batch / rate
    total = max(1, int(seconds * rate / batch))
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    headers = {"user-agent": BROWSER_UA, "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=base, limits=limits, headers=headers, timeout=30) as client:

        async def send(k: int) -> None:
            now = dt.datetime.now(dt.timezone.utc).isoformat()
            beacons = []
            for j in range(batch):
                n = k * batch + j
                experiment, variant = TARGETS[n % len(TARGETS)]
                beacons.append(
                    {
                        "experiment_key": experiment,
                        "variant_key": variant,
                        "session_id": f"fresh_{tag}_{n:09d}",
                        "path": "/",
                        "event_name": "impression",
                        "timestamp": now,
                        "event_id": f"{tag}-{n:012d}",
                    }
                )
            run.sent += batch
            try:
                response = await client.post("/api/experiments/batch", json=beacons)
            except httpx.HTTPError:
                run.failed += batch
                return
            if response.status_code != 202:
                run.failed += batch
                return
            accepted = response.json()["accepted"]
            run.dropped += batch - accepted
            run.acks.append((time.monotonic(), accepted))

        tasks = []
        start = time.monotonic() + 0.05
        for k in range(total):
            delay = start + k * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -interval:
                run.late_starts += 1
            tasks.append(asyncio.create_task(send(k)))
        await asyncio.gather(*tasks)


async def poll(base: str, token: str, every_s: float, run: Run, stop: asyncio.Event) -> None:
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        while not stop.is_set():
            sent = time.monotonic()
            response = await client.get("/api/v1/experiments/results")
            returned = time.monotonic()
            if response.status_code == 200:
                visible = sum(v["impressions"] for e in response.json() for v in e["variants"])
                run.polls.append((sent, returned, visible))
                source = response.headers.get("x-abacus-source", "?")
                run.sources[source] = run.sources.get(source, 0) + 1
            await asyncio.sleep(max(0.0, every_s - (returned - sent)))


async def drive(base: str, token: str, args: argparse.Namespace, batch_wait_ms: int) -> Run:
    run = Run()
    stop = asyncio.Event()
    poller = asyncio.create_task(poll(base, token, args.poll_ms / 1000, run, stop))
    await load(base, args.rate, args.seconds, args.batch, run)
    # Keep polling until everything acknowledged is visible (or clearly never will be).
    expected = sum(n for _, n in run.acks)
    deadline = time.monotonic() + batch_wait_ms / 1000 + 30
    while time.monotonic() < deadline and (not run.polls or run.polls[-1][2] < expected):
        await asyncio.sleep(0.05)
    stop.set()
    await poller
    return run


def freshness(run: Run) -> tuple[list[float], int]:
    """Seconds from each 202 to the first poll sent after it that counted everything acknowledged
    by then; and how many samples never became visible."""
    acks = sorted(run.acks)
    out, missing, j, cumulative = [], 0, 0, 0
    for acked_at, accepted in acks:
        cumulative += accepted
        while j < len(run.polls) and (run.polls[j][0] < acked_at or run.polls[j][2] < cumulative):
            j += 1
        if j == len(run.polls):
            missing += 1
            continue
        out.append(run.polls[j][1] - acked_at)
    return out, missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5000, help="beacons per second (default 5000)")
    parser.add_argument("--seconds", type=float, default=30, help="duration of the load (default 30)")
    parser.add_argument("--batch", type=int, default=50, help="beacons per request (default 50)")
    parser.add_argument("--poll-ms", type=int, default=100, help="results API poll interval (default 100)")
    parser.add_argument("--batch-wait-ms", type=int, default=None, help="set ABACUS_BATCH_WAIT_MS (default: the configured one)")
    parser.add_argument("--target-s", type=float, default=2.0, help="freshness target for the last line (default 2)")
    parser.add_argument("--tiny", action="store_true", help="a few seconds, for CI: 1000 beacons/s for 3 s")
    args = parser.parse_args()
    if args.tiny:
        args.rate, args.seconds = min(args.rate, 1000), min(args.seconds, 3)

    from shared.settings import Settings

    env = {
        k: v for k, v in os.environ.items() if not k.startswith("ABACUS_") or k in ("ABACUS_BATCH_WAIT_MS", "ABACUS_BATCH_SIZE")
    }
    if args.batch_wait_ms is not None:
        env["ABACUS_BATCH_WAIT_MS"] = str(args.batch_wait_ms)
    configured = Settings.from_env(env)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} (shared machine: figures vary with other load)")
    print(
        f"abacus serve (embedded Valkey + chDB), {args.rate:.0f} beacons/s as {args.rate / args.batch:.0f} requests/s "
        f"of {args.batch}, {args.seconds:.0f} s; results polled every {args.poll_ms} ms"
    )

    with tempfile.TemporaryDirectory(prefix="abacus-bench-fresh-") as tmp:
        data_dir = Path(tmp) / "data"
        log_path = Path(tmp) / "serve.log"
        port = free_port()
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [python(), "-m", "abacus.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            try:
                wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60)
            except RuntimeError:
                raise SystemExit("abacus serve did not become ready:\n" + log_path.read_text()[-3000:]) from None
            token = (
                subprocess.run(
                    [python(), "-m", "abacus.cli", "token", "--data-dir", str(data_dir), "--sub", "bench", "--role", "admin"],
                    cwd=REPO,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            run = asyncio.run(drive(f"http://127.0.0.1:{port}", token, args, configured.batch_wait_ms))
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    acked = sum(n for _, n in run.acks)
    samples, missing = freshness(run)
    poll_ms = [(returned - sent) * 1000 for sent, returned, _ in run.polls]
    visible = run.polls[-1][2] if run.polls else 0
    print(
        f"sent {run.sent} beacons: {acked} accepted (202), {run.dropped} dropped, {run.failed} failed; "
        f"{visible} visible at the end; {run.late_starts} requests started late"
    )
    print(
        f"results answered from: {', '.join(f'{source} {n}' for source, n in sorted(run.sources.items()))} polls (X-Abacus-Source)"
    )
    print(
        f"results API poll latency: p50 {statistics.median(poll_ms):.0f} ms, p99 {percentile(poll_ms, 0.99):.0f} ms ({len(poll_ms)} polls)"
    )
    print(
        f"baseline: worker batch wait {configured.batch_wait_ms} ms (ABACUS_BATCH_WAIT_MS), batch size {configured.batch_size} rows"
    )
    if not samples:
        raise SystemExit("no sample became visible")
    p50, p99 = statistics.median(samples), percentile(samples, 0.99)
    print(
        f"freshness (202 -> counted by the results API), {len(samples)} samples ({missing} never visible): "
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(samples) * 1000:.0f} ms"
    )
    print(f"freshness p50 / batch wait: {p50 * 1000 / max(1, configured.batch_wait_ms):.2f}")
    if missing or acked != visible:
        raise SystemExit(f"{acked - visible} acknowledged beacons never became visible")
    print(f"freshness p99 / {args.target_s:g}s target: {p99 / args.target_s:.2f}")


if __name__ == "__main__":
    sys.exit(main())
