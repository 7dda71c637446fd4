"""How fast the roller folds stored events into the results rollup, against the worker storing them.

    .venv/bin/python -m bench.bench_rollup [--beacons 1000000] [--per-entry 1] [--tiny]

The same beacons as bench_worker_drain (total/5 sessions of about five beacons, sticky to a
variant, each session's beacons spread over the whole stream) are queued in a fresh Valkey; one
worker drains them into chDB (`run(burst=True)`; the baseline), then, once chDB's merges of the
worker's inserts have settled (as they had before the worker started), one roller folds them
(`run(until_caught_up=True)`). They run one after the other. A ratio of 1 or more means one roller
keeps up with one worker, so the rollup trails the stored events by no more than its idle wait.
Then the rollup is checked against the raw results query on the same data (every count equal).

Then two rollers fold the same stream again into a fresh rollup split into two shares
(ABACUS_ROLLUP_SHARDS=2), each taking one. chDB runs inside one process, so here the two rollers
are two threads of this process sharing one interpreter lock: the figure shows what sharing the
work costs (each roller still reads every entry); rollers as separate processes against a
ClickHouse server are what adds cores. So one roller then folds one share of two alone, as each
of two such processes would: the stream's events over its time is what two processes could keep
up with together (each on a core of its own). The last line is the one-roller/worker ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_worker_drain import queue_beacons
from bench.common import freeze_heap, machine, start_valkey, wait_for_merges


def check_rollup(clickhouse, keys: list[str], raw: dict) -> None:  # type: ignore[no-untyped-def]
    from query_api.results_query import fetch_rollup_totals

    rolled = fetch_rollup_totals(clickhouse.client(), keys)
    same = raw.keys() == rolled.keys() and all(
        math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
        for key in raw
        for a, b in zip(dataclasses.astuple(raw[key]), dataclasses.astuple(rolled[key]))
    )
    if not same:
        raise SystemExit(f"rollup differs from the raw query:\n raw    {raw}\n rollup {rolled}")


def fold_with_two_rollers(settings, clickhouse, keys: list[str], raw: dict) -> float:  # type: ignore[no-untyped-def]
    """Events/s of two rollers, one share each, folding the whole stream into an empty rollup."""
    import threading

    from shared.rollup.protocol import shard_of
    from worker import rollup_store
    from worker.main import build_roller

    if {shard_of(key, 2) for key in keys} != {0, 1}:
        raise SystemExit("the bench experiments do not fall into both shares")
    settings = dataclasses.replace(settings, rollup_shards=2)
    client = clickhouse.client()
    for table in (rollup_store.EVENTS_TABLE, rollup_store.COHORT_TOTALS_TABLE):
        client.command(f"TRUNCATE TABLE {table}")
    rollers = [build_roller(settings, clickhouse) for _ in range(2)]
    for roller in rollers:
        roller.protocol.heartbeat(roller.owner, 60_000)  # both counted from the start: one share each
        for share in roller.shares:  # as if built when the stream began: empty, bookmarked at its start
            share.share.finish_rebuild(share.share.begin_rebuild())
    wait_for_merges(client, 60, quiet_s=2.0)
    freeze_heap()
    threads = [threading.Thread(target=roller.run, kwargs={"until_caught_up": True}) for roller in rollers]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for roller in rollers:
        roller.redis.close()
    check_rollup(clickhouse, keys, raw)
    return sum(roller.folded_events for roller in rollers) / elapsed


def fold_one_share_of_two(settings, clickhouse, keys: list[str], stored: int) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    """Stream events/s (``stored`` of them) of one roller folding one share of two, alone, as each
    of two roller processes would (against a ClickHouse server; chDB allows one process), and the
    experiment it folded. Checked against the raw query for that experiment."""
    from query_api.results_query import fetch_rollups
    from shared.rollup.protocol import shard_of
    from worker import rollup_store
    from worker.main import build_roller

    settings = dataclasses.replace(settings, rollup_shards=2)
    client = clickhouse.client()
    for table in (rollup_store.EVENTS_TABLE, rollup_store.COHORT_TOTALS_TABLE):
        client.command(f"TRUNCATE TABLE {table}")
    roller = build_roller(settings, clickhouse)
    # Another roller said to run: this one then takes its fair number of shares, one.
    roller.protocol.heartbeat("bench-other-roller", 120_000)
    roller.protocol.heartbeat(roller.owner, 120_000)
    for share in roller.shares:
        share.share.finish_rebuild(share.share.begin_rebuild())
    wait_for_merges(client, 60, quiet_s=2.0)
    freeze_heap()
    started = time.perf_counter()
    roller.run(until_caught_up=True)
    elapsed = time.perf_counter() - started
    roller.redis.close()
    (folded,) = [shard for shard, share in enumerate(roller.shares) if share.folded_events]
    (key,) = [key for key in keys if shard_of(key, 2) == folded]
    check_rollup(clickhouse, [key], fetch_rollups(client, [key], None, None))
    return stored / elapsed, key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beacons", type=int, default=1_000_000)
    parser.add_argument("--per-entry", type=int, default=1, help="beacons per stream entry (ingest packs concurrent requests)")
    parser.add_argument("--batch-size", type=int, default=5000, help="worker batch size (ABACUS_BATCH_SIZE)")
    parser.add_argument("--tiny", action="store_true", help="a few seconds, for CI: 20,000 beacons")
    parser.add_argument("--one-roller", action="store_true", help="skip the two-roller stage (paired before/after runs)")
    args = parser.parse_args()
    if args.tiny:
        args.beacons = 20_000

    from query_api.results_query import fetch_rollups
    from shared.clickhouse import ClickHouse, chdb_url, migrate
    from shared.settings import Settings
    from worker.main import build_roller, build_worker

    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    valkey = start_valkey()
    tmp = tempfile.TemporaryDirectory(prefix="abacus-bench-rollup-")
    clickhouse = ClickHouse(chdb_url(Path(tmp.name)))
    try:
        migrate(clickhouse.client())
        settings = Settings(redis_url=valkey.connection_url + "/0", clickhouse_url=clickhouse.url, batch_size=args.batch_size)
        roller = build_roller(settings, clickhouse)
        roller.run(until_caught_up=True)  # builds the (empty) rollup: its bookmark now holds the stream
        queued_s = queue_beacons(settings.redis_url or "", args.beacons, args.per_entry)
        print(f"{args.beacons:,} beacons queued in {queued_s:.1f} s, {args.per_entry} per entry")

        worker = build_worker(settings, clickhouse, consumer_name="bench")
        freeze_heap()
        started, cpu = time.perf_counter(), time.process_time()
        worker.run(burst=True)
        drain_s, drain_cpu = time.perf_counter() - started, time.process_time() - cpu
        worker.consumer.redis.close()

        roller = build_roller(settings, clickhouse)
        settled_s = wait_for_merges(clickhouse.client(), 120, quiet_s=2.0)
        print(f"waited {settled_s:.0f} s for chDB's merges of the worker's inserts to settle")
        freeze_heap()
        started, cpu = time.perf_counter(), time.process_time()
        roller.run(until_caught_up=True)
        fold_s, fold_cpu = time.perf_counter() - started, time.process_time() - cpu
        roller.redis.close()

        keys = ["homepage_hero_test", "pricing_cta_test"]
        raw = fetch_rollups(clickhouse.client(), keys, None, None)
        check_rollup(clickhouse, keys, raw)
        drain_rate, fold_rate = worker.inserted_rows / drain_s, roller.folded_events / fold_s
        print(f"worker stored {worker.inserted_rows:,} events in {drain_s:.1f} s: {drain_rate:,.0f} events/s")
        print(
            f"roller folded {roller.folded_events:,} events in {fold_s:.1f} s: {fold_rate:,.0f} events/s; rollup equals the raw query"
        )
        # CPU of the whole process (chDB's threads included) per event: on a machine shared with
        # other work the wall-clock rates follow the load; this ratio follows the code.
        print(
            f"process CPU per event: worker {drain_cpu / worker.inserted_rows * 1e6:.1f} us, "
            f"roller {fold_cpu / roller.folded_events * 1e6:.1f} us; ratio worker/roller {drain_cpu / worker.inserted_rows / (fold_cpu / roller.folded_events):.2f}"
        )
        if not args.one_roller:
            two_rate = fold_with_two_rollers(settings, clickhouse, keys, raw)
            print(
                f"two rollers (2 shares, threads of one process): {two_rate:,.0f} events/s, {two_rate / fold_rate:.2f}x one roller"
            )
            share_rate, key = fold_one_share_of_two(settings, clickhouse, keys, worker.inserted_rows)
            print(
                f"one roller folding 1 share of 2 ({key}) alone, as each of two roller processes would: "
                f"through the stream at {share_rate:,.0f} events/s, {share_rate / fold_rate:.2f}x one roller folding all"
            )
        print(f"ratio roller/worker events/s: {fold_rate / drain_rate:.2f}")
    finally:
        clickhouse.close()
        valkey.stop()
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
