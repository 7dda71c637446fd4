"""Worker drain with 1 and with 2 stream shards (ABACUS_STREAM_SHARDS) on this machine: the same
beacons, routed to their sessions' shards as ingest routes them, drained into chDB by one
`abacus worker --burst` process (one loop per shard, as `run_worker_process` runs them).

    .venv/bin/python -m bench.bench_stream_shards [--beacons 300000] [--events-per-entry 16] [--rounds 2] [--tiny]

Each drain runs in a child process on a fresh chDB directory (as bench_worker_drain does); the
queueing is outside the clock. Rounds alternate 1 and 2 shards; the last line is the median ratio
of events/s, 2 shards / 1 shard. On one Valkey and one chDB the shards share the same servers:
the figure says what a second loop per process gains from overlapping reads and inserts, not
what a second Redis primary would add (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import msgspec

from bench.bench_worker_drain import make_events
from bench.common import REPO, freeze_heap, machine, python, start_valkey
from shared import redis_keys
from shared.settings import Settings
from shared.wire import StreamEnvelope


def queue(redis_url: str, beacons: int, per_entry: int, shards: int) -> float:
    """Queue the beacons on the shards' streams, ``per_entry`` events of one shard per entry."""
    import redis

    settings = Settings(redis_url=redis_url, stream_shards=shards)
    layout = redis_keys.stream_layout(settings)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    encoder = msgspec.msgpack.Encoder()
    started = time.perf_counter()
    for offset in range(0, beacons, 100_000):
        by_shard: dict[int, list] = {}
        for event in make_events(offset, min(beacons, offset + 100_000), beacons):
            by_shard.setdefault(redis_keys.session_shard(event.session_id, shards), []).append(event)
        pipe = client.pipeline(transaction=False)
        for shard, events in by_shard.items():
            for i in range(0, len(events), per_entry):
                pipe.xadd(layout[shard].stream, {b"e": encoder.encode(StreamEnvelope(events=events[i : i + per_entry]))})
        pipe.execute()
    client.close()
    return time.perf_counter() - started


def child_drain(redis_url: str, shards: int, data_dir: Path) -> None:
    from shared.clickhouse import ClickHouse, chdb_url, migrate
    from worker.main import build_workers

    clickhouse = ClickHouse(chdb_url(data_dir))
    migrate(clickhouse.client())
    settings = Settings(redis_url=redis_url, clickhouse_url=clickhouse.url, stream_shards=shards)
    workers = build_workers(settings, clickhouse, "bench")
    freeze_heap()
    started = time.perf_counter()
    threads = [threading.Thread(target=w.run, kwargs={"burst": True}) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    stored = clickhouse.client().query("SELECT count() FROM abacus.events").result_rows[0][0]
    print(json.dumps({"seconds": elapsed, "stored": stored, "rows": sum(w.inserted_rows for w in workers)}))
    clickhouse.close()


def drain(redis_url: str, shards: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="abacus-bench-shards-") as tmp:
        out = subprocess.run(
            [python(), "-m", "bench.bench_stream_shards", "--child", redis_url, "--shards", str(shards), "--child-dir", tmp],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    if out.returncode != 0:
        raise RuntimeError(f"drain with {shards} shards failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beacons", type=int, default=300_000)
    parser.add_argument("--events-per-entry", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="seconds, for CI: 20,000 beacons, one round")
    parser.add_argument("--child", metavar="REDIS_URL", help=argparse.SUPPRESS)
    parser.add_argument("--shards", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--child-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_drain(args.child, args.shards, args.child_dir)
        return
    if args.tiny:
        args.beacons, args.rounds = min(args.beacons, 20_000), 1
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} (shared machine: figures vary with other load)")
    print(f"{args.beacons} beacons, {args.events_per_entry} per stream entry, one worker process")
    valkey = start_valkey()
    url = valkey.connection_url + "/0"
    ratios = []
    try:
        for round_ in range(1, args.rounds + 1):
            rates = {}
            for shards in (1, 2):
                queue(url, args.beacons, args.events_per_entry, shards)
                result = drain(url, shards)
                if result["stored"] != args.beacons:
                    raise SystemExit(f"{shards} shards stored {result['stored']} rows, expected {args.beacons}")
                rates[shards] = args.beacons / result["seconds"]
                print(f"round {round_}: {shards} shard(s)  {rates[shards]:10,.0f} events/s  ({result['seconds']:.2f} s)")
            ratios.append(rates[2] / rates[1])
    finally:
        valkey.stop()
    print(f"2 shards / 1 shard, median of {len(ratios)} rounds: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
