"""Honest freshness and rebuilds that end, against a real Valkey and the session's chDB.

What the rollup says about itself is measured against what the workers may have stored (every
entry delivered to them, acknowledged or not): never from a roller's report, which a dead roller
leaves behind, nor from an empty stream.
"""

from __future__ import annotations

import dataclasses
import random
import time

from shared import redis_keys
from shared.rollup.protocol import RollupProtocol
from tests.rollup.test_roller import EXPERIMENTS, assert_rollup_matches_events, drain_workers, publish, random_events, roll
from worker.main import build_roller, build_worker
from worker.rows import decode_entries

BUILT = redis_keys.rollup_shard_key(redis_keys.ROLLUP_BUILT, 0, 1)
LOCK = redis_keys.rollup_shard_key("lock", 0, 1)


def protocol(settings, redis_client, max_lag_ms: int = 10_000) -> RollupProtocol:
    return RollupProtocol(redis_client, settings.stream, settings.consumer_group, settings.rollup_shards, max_lag_ms)


def store_without_acknowledging(settings, clickhouse, count: int = 100) -> int:
    """A worker reads entries and inserts them, then dies before acknowledging: the events are in
    abacus.events and the entries still pending. Returns how many events it stored."""
    worker = build_worker(settings, clickhouse, consumer_name="doomed")
    worker.consumer.ensure_group()
    entries = worker.consumer.read_new(count, None)
    decoded = decode_entries(entries)
    worker.sink.insert(decoded)
    worker.consumer.redis.close()
    return decoded.row_count


def test_a_rebuild_on_an_idle_empty_stream_ends_once(settings, redis_client, clean_clickhouse):
    roll(settings, clean_clickhouse)
    redis_client.incr(redis_keys.ROLLUP_REBUILD)
    roll(settings, clean_clickhouse)  # the rebuild: its bookmark now at the start of an empty stream
    built = redis_client.get(BUILT)
    assert built is not None and not protocol(settings, redis_client).freshness(list(EXPERIMENTS)).rebuild_requested
    for _ in range(3):
        drain_workers(settings, clean_clickhouse)  # each burst ends with a trim, which asks the rollup
        roll(settings, clean_clickhouse)
    assert redis_client.get(BUILT) == built, "an empty stream must not make the rollup look abandoned"
    freshness = protocol(settings, redis_client).freshness(list(EXPERIMENTS))
    assert freshness.built and not freshness.rebuild_requested and freshness.unfolded_events == 0


def test_a_rebuild_on_a_trimmed_stream_ends_once(settings, redis_client, clean_clickhouse):
    publish(redis_client, settings, random_events(random.Random(61), 60))
    drain_workers(settings, clean_clickhouse)
    roll(settings, clean_clickhouse)
    drain_workers(settings, clean_clickhouse)  # trims everything folded
    assert redis_client.xlen(settings.stream) == 0
    redis_client.incr(redis_keys.ROLLUP_REBUILD)
    roller = build_roller(settings, clean_clickhouse)
    generations = set()
    for _ in range(5):
        roller.run_once()
        drain_workers(settings, clean_clickhouse)
        generations.add(redis_client.get(BUILT))
    assert len(generations) == 1, "rebuilt once, then left alone"
    assert_rollup_matches_events(clean_clickhouse)


def test_events_stored_and_not_acknowledged_count_as_unfolded(settings, redis_client, clean_clickhouse):
    roll(settings, clean_clickhouse)
    publish(redis_client, settings, random_events(random.Random(67), 90), per_entry=3)
    stored = store_without_acknowledging(settings, clean_clickhouse)
    assert stored == 90
    roll(settings, clean_clickhouse)  # folds nothing: the workers have acknowledged nothing
    freshness = protocol(settings, redis_client).freshness(list(EXPERIMENTS))
    assert freshness.unfolded_events == 90 and freshness.unfolded_exact
    # Only what the asked experiments lack is counted.
    only_a = protocol(settings, redis_client).freshness(["exp_a"])
    only_b = protocol(settings, redis_client).freshness(["exp_b"])
    assert only_a.unfolded_events + only_b.unfolded_events == 90 and 0 < only_a.unfolded_events < 90
    time.sleep(0.05)
    strict = protocol(settings, redis_client, max_lag_ms=10).freshness(list(EXPERIMENTS))
    assert not strict.current and strict.behind_ms >= 10, "older than the allowed lag: not current"
    # Another worker claims the dead one's entries and acknowledges them; the roller folds them.
    worker = build_worker(dataclasses.replace(settings, claim_idle_ms=0), clean_clickhouse, consumer_name="w1")
    worker.run(burst=True)
    running = build_roller(settings, clean_clickhouse)
    while running.run_once()[0]:
        pass  # folds, and keeps holding the lock as a running roller does
    caught_up = protocol(settings, redis_client).freshness(list(EXPERIMENTS))
    assert caught_up.current and caught_up.unfolded_events == 0 and caught_up.behind_ms == 0
    assert_rollup_matches_events(clean_clickhouse)


def test_a_dead_rollers_lock_does_not_keep_the_rollup_current(settings, redis_client, clean_clickhouse):
    roll(settings, clean_clickhouse)
    redis_client.set(LOCK, "a-roller-killed-with-sigkill", px=60_000)
    publish(redis_client, settings, random_events(random.Random(71), 30))
    drain_workers(settings, clean_clickhouse)
    time.sleep(0.3)
    freshness = protocol(settings, redis_client, max_lag_ms=200).freshness(list(EXPERIMENTS))
    assert freshness.roller_running, "the lock is still there"
    assert not freshness.current and freshness.unfolded_events == 30 and freshness.behind_ms >= 300


def test_a_rollup_nobody_built_is_not_current(settings, redis_client, clean_clickhouse):
    publish(redis_client, settings, random_events(random.Random(73), 10))
    drain_workers(settings, clean_clickhouse)
    freshness = protocol(settings, redis_client).freshness(list(EXPERIMENTS))
    assert not freshness.built and not freshness.current and not freshness.roller_running
