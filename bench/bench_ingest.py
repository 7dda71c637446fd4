"""Ingest throughput: `abacus ingest --workers 1` against raw baselines on the same server.

    python bench/bench_ingest.py --mode single   # one beacon per request
    python bench/bench_ingest.py --mode batch    # 100 beacons per request

wrk drives each server with 64 connections; for ingest the beacons must really be in the Redis
stream afterwards (counted and compared with the 202s). Two baselines, both reading the body and
answering the same 202 with no work: raw ASGI (what the throughput target is stated against) and
raw RSGI (the interface `abacus ingest` serves, so the honest ceiling). Both ratios are printed;
the last line is the one against raw ASGI.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import msgspec
import redis

from bench.common import free_port, machine, publish_seed_registry, python, spawn, start_valkey, wait_http
from shared.wire import StreamEnvelope

BEACON = {
    "experiment_key": "homepage_hero_test",
    "variant_key": "control",
    "session_id": "session_abcd1234",
    "path": "/",
    "event_name": "cta_click",
    "timestamp": "2026-11-25T12:00:00+00:00",
    "metadata": {"element": "Explore Pack Walks", "slot": "primary"},
}


def run_wrk(url: str, body_file: Path, seconds: int, connections: int) -> dict[str, float]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(Path(__file__).with_name("wrk_post.lua")),
            url,
        ],
        capture_output=True,
        text=True,
        env={"BODY_FILE": str(body_file), "PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": requests,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "p50_ms": _latency(out, "50%"),
        "p99_ms": _latency(out, "99%"),
        "socket_errors": errors.group(1) if errors else "",
    }


def _latency(out: str, label: str) -> float:
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


BASELINES = {"baseline": ("asgi", "bench.baseline_asgi:app"), "rsgi-base": ("rsgi", "bench.baseline_rsgi:app")}


def serve(target: str, port: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    if target in BASELINES:
        interface, app = BASELINES[target]
        args = [python(), "-m", "granian", "--interface", interface, "--workers", "1", "--port", str(port), app]
    else:
        args = [python(), "-m", "abacus.cli", "ingest", "--workers", "1", "--port", str(port)]
    process = spawn(args, env)
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return process


def events_in_stream(client: redis.Redis, stream: str) -> tuple[int, int]:
    """(events, entries): their ratio shows how many requests the publisher packed into one XADD."""
    total, count, last = 0, 0, "-"
    while True:
        entries = client.xrange(stream, min=last, count=10_000)
        if last != "-":
            entries = entries[1:]
        if not entries:
            return total, count
        count += len(entries)
        for _, fields in entries:
            total += len(msgspec.msgpack.decode(fields[b"e"], type=StreamEnvelope).events)
        last = entries[-1][0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["single", "batch"], default="single")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()

    body = [BEACON] * args.batch_size if args.mode == "batch" else BEACON
    path = "/api/experiments/batch" if args.mode == "batch" else "/api/experiments/event"
    per_request = args.batch_size if args.mode == "batch" else 1
    body_file = Path(tempfile.mkstemp(suffix=".json")[1])
    body_file.write_text(json.dumps(body))

    valkey = start_valkey()
    redis_url = valkey.connection_url + "/0"
    publish_seed_registry(redis_url)
    client = redis.Redis.from_url(redis_url)
    results = {}
    try:
        for target in ("baseline", "rsgi-base", "abacus"):
            port = free_port()
            process = serve(target, port, {"ABACUS_REDIS_URL": redis_url})
            try:
                run_wrk(f"http://127.0.0.1:{port}{path}", body_file, 1, args.connections)  # warm-up
                client.delete("abacus:events")
                time.sleep(0.5)
                results[target] = run_wrk(f"http://127.0.0.1:{port}{path}", body_file, args.seconds, args.connections)
            finally:
                process.terminate()
                process.wait(10)
        landed, entries = events_in_stream(client, "abacus:events")
    finally:
        client.close()
        valkey.stop()
        body_file.unlink()

    print(f"machine: {machine()}; {args.connections} connections, {args.seconds}s, mode {args.mode}")
    for target, r in results.items():
        print(
            f"{target:9s} {r['rps']:10.0f} req/s  {r['rps'] * per_request:10.0f} beacons/s  "
            f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  non-2xx {r['non_2xx']}  {r['socket_errors']}"
        )
    expected = results["abacus"]["requests"] * per_request
    print(
        f"abacus beacons in stream: {landed} (202s x beacons per request >= {expected - results['abacus']['non_2xx'] * per_request}), "
        f"in {entries} entries ({landed / per_request / max(entries, 1):.1f} requests per XADD)"
    )
    print(f"ratio abacus/raw RSGI requests/s: {results['abacus']['rps'] / results['rsgi-base']['rps']:.2f}")
    print(f"ratio abacus/baseline requests/s: {results['abacus']['rps'] / results['baseline']['rps']:.2f}")


if __name__ == "__main__":
    main()
