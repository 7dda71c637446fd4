"""Worker drain rate: `Worker.run(burst=True)` from a full Valkey stream into chDB, against a bare
clickhouse-connect insert of the same rows in the same run.

    .venv/bin/python -m bench.bench_worker_drain [--beacons 1000000] [--events-per-entry 1]
                                                 [--batch-size 5000] [--rss-entries 5000000]
                                                 [--rounds 3] [--tiny]

Phase 1 queues N beacons (one event per stream entry by default, as single-beacon ingest writes
them at low load; --events-per-entry K packs K per entry as ingest does under load) and times the
worker draining them into chDB. The baseline inserts the very same rows with clickhouse-connect,
column-oriented, in batches of the same size, into an identical empty `abacus.events`: that is the
floor the worker's Redis reads, framing, dedup tokens and acks come on top of. Each contender runs
in a process of its own on a fresh chDB directory, as `abacus worker --burst` runs apart from
anything else. (When the two shared one process, the worker's rate fell round after round, e.g.
225k, 173k, 162k events/s, while the baseline's held, and the process kept ~130 more chDB threads
after the first baseline; in processes of their own the rounds hold level.) chDB's start-up,
the migrations and building the baseline's columns are outside the clock. The two alternate for
--rounds rounds (3 by default) and the median of the rounds' ratios is printed: on a shared host
the machine's speed drifts within a run, and a single pair was seen to range from 0.41x to 0.62x.

Phase 2 (skip with --rss-entries 0) queues --rss-entries entries and drains them in the same kind
of child process, to read the worker's peak RSS: VmHWM from /proc/self/status at the end of the
drain. (RUSAGE_CHILDREN's ru_maxrss is no good here: it counts the pages the child shared with
the parent between fork and exec.)

The last line is the ratio of events/s, abacus/baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from bench.common import REPO, freeze_heap, machine, python, start_valkey
from shared.wire import StreamEnvelope, StreamEvent

STREAM = "abacus:events"
EXPERIMENTS = (
    ("homepage_hero_test", ("control", "tiny_gang_social_proof"), "/"),
    ("pricing_cta_test", ("control", "meet_greet_emphasis"), "/our-pricing"),
)
CTA_METADATA = json.dumps({"element": "Explore Pack Walks", "slot": "primary"}, separators=(",", ":"))
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
PREFIX = "b3nchd4a1n5eed00"  # 16 hex-ish chars, like ingest's per-process event id prefix


def make_events(start: int, stop: int, total: int) -> list[StreamEvent]:
    """Beacons number start..stop-1 of `total`; a pure function of (number, total), so any range
    can be rebuilt for the baseline without keeping millions of events in memory.

    Mix per 100 beacons: 70 impressions, 15 cta_click, 6 form_start, 4 form_submit, 5 conversions
    (with a value); total/5 sessions (about five beacons each), each sticky to one variant."""
    sessions = max(1, total // 5)
    out = []
    for i in range(start, stop):
        session = (i * 2_654_435_761) % sessions
        experiment_key, variants, path = EXPERIMENTS[session & 1]
        variant_key = variants[(session >> 1) & 1]
        bucket = (i * 40_503) % 100
        value = None
        metadata = "{}"
        if bucket < 70:
            event_type = "impression"
        elif bucket < 85:
            event_type = "cta_click"
            metadata = CTA_METADATA
        elif bucket < 91:
            event_type = "form_start"
        elif bucket < 95:
            event_type = "form_submit"
        else:
            event_type = "conversion"
            value = float(10 + (i % 190))
        received = BASE_MS + i * 7
        out.append(
            StreamEvent(
                event_id=f"{PREFIX}{i:016x}",
                experiment_key=experiment_key,
                variant_key=variant_key,
                session_id=f"session_{session:010x}",
                event_type=event_type,
                path=path,
                conversion_value=value,
                metadata_json=metadata,
                client_ts_ms=received - 120,
                received_at_ms=received,
            )
        )
    return out


# ----- filling the stream fast: raw RESP over one socket, one XADD per entry, pipelined ----------
def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def fill_stream(host: str, port: int, payloads: list[bytes], chunk: int = 5_000) -> None:
    """XADD every payload as field b"e" of its own entry, `chunk` commands per round trip."""
    head = b"*5\r\n" + _bulk(b"XADD") + _bulk(STREAM.encode()) + _bulk(b"*") + _bulk(b"e")
    with socket.create_connection((host, port)) as sock:
        for offset in range(0, len(payloads), chunk):
            part = payloads[offset : offset + chunk]
            sock.sendall(b"".join(head + _bulk(p) for p in part))
            # Each XADD answers "$<n>\r\n<id>\r\n": two CRLFs; an error is one line starting "-".
            expected, seen, tail = 2 * len(part), 0, b"\n"
            while seen < expected:
                data = sock.recv(1 << 20)
                if not data:
                    raise RuntimeError("Valkey closed the connection while filling the stream")
                window = tail + data  # a CRLF may straddle two reads
                if b"\n-" in window:
                    raise RuntimeError(f"XADD failed: {data[:200]!r}")
                seen += window.count(b"\r\n")
                tail = data[-1:]


def queue_beacons(redis_url: str, total: int, per_entry: int, chunk_events: int = 200_000) -> float:
    """Queue beacons 0..total-1, `per_entry` per entry; returns seconds taken."""
    host, port = _host_port(redis_url)
    encoder = msgspec.msgpack.Encoder()
    started = time.perf_counter()
    for offset in range(0, total, chunk_events):
        events = make_events(offset, min(total, offset + chunk_events), total)
        payloads = [encoder.encode(StreamEnvelope(events=events[i : i + per_entry])) for i in range(0, len(events), per_entry)]
        fill_stream(host, port, payloads)
    return time.perf_counter() - started


def _host_port(redis_url: str) -> tuple[str, int]:
    hostport = redis_url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    return host or "127.0.0.1", int(port)


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ----- the two contenders ------------------------------------------------------------------
def drain_with_worker(redis_url: str, clickhouse, batch_size: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    from shared.settings import Settings
    from worker.main import build_worker

    settings = Settings(redis_url=redis_url, clickhouse_url=clickhouse.url, batch_size=batch_size)
    worker = build_worker(settings, clickhouse, consumer_name="bench")
    freeze_heap()
    started = time.perf_counter()
    worker.run(burst=True)
    elapsed = time.perf_counter() - started
    worker.consumer.redis.close()
    return elapsed, worker.inserted_rows


def insert_baseline(clickhouse, total: int, batch_size: int) -> float:  # type: ignore[no-untyped-def]
    from worker.rows import COLUMNS

    client = clickhouse.client()
    # Columns built before the clock starts: the baseline is the insert alone.
    batches = []
    for offset in range(0, total, batch_size):
        rows = [msgspec.structs.astuple(e) for e in make_events(offset, min(total, offset + batch_size), total)]
        batches.append([list(column) for column in zip(*rows)])
    freeze_heap()  # as the worker's start-up heap is: no full collection walks the prepared columns
    started = time.perf_counter()
    for columns in batches:
        client.insert("abacus.events", columns, column_names=COLUMNS, column_oriented=True)
    return time.perf_counter() - started


def drain_round(redis_url: str, beacons: int, per_entry: int, batch_size: int, round_: int) -> float:
    """One worker drain and one baseline insert of the same rows, each in a child process on a
    fresh chDB directory; the ratio of their rates. Rounds alternate the two, so a machine that
    slows down or speeds up during a run (a shared host) weighs on both alike."""
    import redis

    with redis.Redis.from_url(redis_url) as valkey_client:
        valkey_client.delete(STREAM)
    queued_s = queue_beacons(redis_url, beacons, per_entry)
    print(f"round {round_}: queued {beacons} beacons in {queued_s:.1f} s ({beacons / queued_s:,.0f}/s via pipelined XADD)")

    drained = run_child(["--child-drain", redis_url, "--batch-size", str(batch_size)])
    if drained["stored"] != beacons or drained["rows"] != beacons:
        raise SystemExit(f"worker stored {drained['stored']} rows (inserted {drained['rows']}), expected {beacons}")
    baseline = run_child(["--child-baseline", str(beacons), "--batch-size", str(batch_size)])
    if baseline["stored"] != beacons:
        raise SystemExit(f"baseline stored {baseline['stored']} rows, expected {beacons}")
    abacus_rate, baseline_rate = beacons / drained["seconds"], beacons / baseline["seconds"]
    print(
        f"abacus    worker burst drain        {abacus_rate:12,.0f} events/s  ({drained['seconds']:.2f} s, {drained['stored']} rows stored)"
    )
    print(
        f"baseline  clickhouse-connect insert {baseline_rate:12,.0f} events/s  ({baseline['seconds']:.2f} s, same rows and batch size)"
    )
    return abacus_rate / baseline_rate


def run_child(args: list[str]) -> dict:
    """Runs this script in a child process on a fresh chDB directory; returns the JSON it prints."""
    with tempfile.TemporaryDirectory(prefix="abacus-bench-drain-") as tmp:
        out = subprocess.run(
            [python(), "-m", "bench.bench_worker_drain", *args, "--child-dir", tmp],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    if out.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----- the child processes -------------------------------------------------------------------
def fresh_clickhouse(data_dir: Path):  # type: ignore[no-untyped-def]
    from shared.clickhouse import ClickHouse, chdb_url, migrate

    clickhouse = ClickHouse(chdb_url(data_dir))
    migrate(clickhouse.client())
    return clickhouse


def stored_events(clickhouse) -> int:  # type: ignore[no-untyped-def]
    return clickhouse.client().query("SELECT count() FROM abacus.events").result_rows[0][0]


def child_drain(redis_url: str, data_dir: Path, batch_size: int) -> None:
    clickhouse = fresh_clickhouse(data_dir)
    before = vm_hwm_mb()
    elapsed, rows = drain_with_worker(redis_url, clickhouse, batch_size)
    print(
        json.dumps(
            {
                "rows": rows,
                "stored": stored_events(clickhouse),
                "seconds": elapsed,
                "hwm_before_mb": before,
                "hwm_mb": vm_hwm_mb(),
            }
        )
    )
    clickhouse.close()


def child_baseline(total: int, data_dir: Path, batch_size: int) -> None:
    clickhouse = fresh_clickhouse(data_dir)
    elapsed = insert_baseline(clickhouse, total, batch_size)
    print(json.dumps({"stored": stored_events(clickhouse), "seconds": elapsed}))
    clickhouse.close()


# ----- RSS phase: the worker alone in a child process ---------------------------------------
def rss_phase(redis_url: str, entries: int, per_entry: int, batch_size: int) -> dict:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.delete(STREAM)
    queued_s = queue_beacons(redis_url, entries * per_entry, per_entry)
    length = client.xlen(STREAM)
    client.close()
    result = run_child(["--child-drain", redis_url, "--batch-size", str(batch_size)])
    result.update({"queued_s": queued_s, "entries": length})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beacons", type=int, default=1_000_000, help="beacons queued for the drain (default 1,000,000)")
    parser.add_argument("--events-per-entry", type=int, default=1, help="beacons per stream entry (ingest packs up to 500)")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per insert (default: ABACUS_BATCH_SIZE's default)")
    parser.add_argument("--rss-entries", type=int, default=5_000_000, help="entries queued for the RSS phase; 0 skips it")
    parser.add_argument(
        "--rounds", type=int, default=3, help="drain and baseline rounds, alternated; the median ratio is printed"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="a few seconds, for CI: 20,000 beacons, 20,000-entry RSS phase, one round"
    )
    parser.add_argument("--child-drain", metavar="REDIS_URL", help=argparse.SUPPRESS)
    parser.add_argument("--child-baseline", type=int, metavar="BEACONS", help=argparse.SUPPRESS)
    parser.add_argument("--child-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    from shared.settings import Settings

    batch_size = args.batch_size or Settings().batch_size
    if args.child_drain:
        child_drain(args.child_drain, args.child_dir, batch_size)
        return
    if args.child_baseline:
        child_baseline(args.child_baseline, args.child_dir, batch_size)
        return
    if args.tiny:
        args.beacons = min(args.beacons, 20_000)
        args.rss_entries = min(args.rss_entries, 20_000)
        args.rounds = 1
    per_entry = max(1, min(500, args.events_per_entry))

    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} (shared machine: figures vary with other load)")
    print(f"{args.beacons} beacons, {per_entry} per stream entry, batch size {batch_size} rows")
    valkey = start_valkey()
    redis_url = valkey.connection_url + "/0"
    try:
        ratios = []
        for round_ in range(1, args.rounds + 1):
            ratios.append(drain_round(redis_url, args.beacons, per_entry, batch_size, round_))
        if args.rss_entries > 0:
            rss = rss_phase(redis_url, args.rss_entries, per_entry, batch_size)
            if rss["stored"] != args.rss_entries * per_entry:
                raise SystemExit(f"RSS phase stored {rss['stored']} rows, expected {args.rss_entries * per_entry}")
            print(
                f"worker peak RSS with {rss['entries']:,} entries queued: VmHWM {rss['hwm_mb']:.0f} MB "
                f"(after chDB start-up and migrations: {rss['hwm_before_mb']:.0f} MB); "
                f"drained {rss['stored']:,} events at {rss['stored'] / rss['seconds']:,.0f} events/s"
            )
        else:
            print("worker peak RSS phase skipped (--rss-entries 0)")
    finally:
        valkey.stop()
    if len(ratios) > 1:
        print("ratios by round: " + ", ".join(f"{ratio:.2f}" for ratio in ratios) + " (the median follows)")
    print(f"ratio abacus/baseline events/s: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    sys.exit(main())
