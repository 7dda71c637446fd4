"""Stream shards on one Valkey (ABACUS_STREAM_SHARDS=2): each shard's worker loop stores its own
entries, whatever ids the shards share, and `abacus serve` runs a loop per shard."""

from __future__ import annotations

import dataclasses

import msgspec

from shared import redis_keys
from shared.wire import StreamEnvelope, StreamEvent
from tests.conftest import wait_for
from tests.helpers import beacon, serve_client
from worker.main import build_workers


def _event(event_id: str, session: str) -> StreamEvent:
    return StreamEvent(event_id, "exp", "control", session, "impression", "/", None, "{}", None, 1_780_000_000_000)


def test_entries_with_the_same_ids_in_two_shards_are_both_stored(settings, redis_client, clean_clickhouse):
    sharded = dataclasses.replace(settings, stream_shards=2)
    for index, shard in enumerate(redis_keys.stream_layout(sharded)):
        # The same entry id in both streams: the workers' deduplication tokens must still differ.
        envelope = msgspec.msgpack.encode(StreamEnvelope(events=[_event(f"e{index}", f"s{index}")]))
        redis_client.xadd(shard.stream, {b"e": envelope}, id="5-1")
    for worker in build_workers(sharded, clean_clickhouse, "w1"):
        worker.run(burst=True)
        worker.consumer.redis.close()
    rows = clean_clickhouse.client().query("SELECT event_id FROM abacus.events ORDER BY event_id").result_rows
    assert rows == [("e0",), ("e1",)]


def test_serve_spreads_sessions_over_the_shards_and_stores_every_beacon(settings, redis_client, clean_clickhouse):
    sharded = dataclasses.replace(settings, stream_shards=2, rollup=False)
    with serve_client(sharded) as client:
        for i in range(40):
            assert client.post("/api/experiments/event", json=beacon(session_id=f"sess{i}", event_id=f"ev{i}")).status_code == 202

        def stored() -> int:
            return clean_clickhouse.client().query("SELECT uniqExact(event_id) FROM abacus.events").result_rows[0][0]

        wait_for(lambda: stored() == 40, timeout=30)
    layout = redis_keys.stream_layout(sharded)
    assert redis_client.exists(settings.stream) == 0, "a sharded deployment leaves the single stream alone"
    assert all(redis_client.xinfo_groups(shard.stream) for shard in layout)


def _two_shards_with_work(settings, redis_client):  # type: ignore[no-untyped-def]
    """Shard 0: 3 entries, all undelivered. Shard 1: 5 entries, 2 pending, 1 dead letter."""
    sharded = dataclasses.replace(settings, stream_shards=2)
    layout = redis_keys.stream_layout(sharded)
    # Entry ids written 5 s in the past on the server's clock: the lag gauge has millisecond
    # resolution, so entries added "now" could read as 0 s behind when scraped in the same ms.
    seconds, micros = redis_client.time()
    past_ms = int(seconds) * 1000 + int(micros) // 1000 - 5_000
    for shard, entries in zip(layout, (3, 5)):
        redis_client.xgroup_create(shard.stream, settings.consumer_group, id="0", mkstream=True)
        for i in range(entries):
            envelope = msgspec.msgpack.encode(StreamEnvelope(events=[_event(f"e{i}", "s")]))
            redis_client.xadd(shard.stream, {b"e": envelope}, id=f"{past_ms}-{i + 1}")
    redis_client.xreadgroup(settings.consumer_group, "crashed-worker", {layout[1].stream: ">"}, count=2)
    redis_client.xadd(layout[1].dead_letter, {b"source_id": b"1-0", b"reason": b"test"})
    return sharded, layout


def test_the_stream_gauges_cover_every_shard(settings, redis_client):
    from prometheus_client import CollectorRegistry, generate_latest

    from shared.stream_metrics import StreamCollector
    from tests.test_metrics import value

    sharded, layout = _two_shards_with_work(settings, redis_client)
    registry = CollectorRegistry()
    registry.register(StreamCollector(redis_client, layout, settings.consumer_group))
    text = generate_latest(registry).decode()
    group = settings.consumer_group
    assert [value(text, "abacus_stream_length", shard=s) for s in ("0", "1")] == [3, 5]
    assert [value(text, "abacus_stream_dead_letters", shard=s) for s in ("0", "1")] == [0, 1]
    assert [value(text, "abacus_group_pending", group=group, shard=s) for s in ("0", "1")] == [0, 2]
    assert [value(text, "abacus_group_undelivered", group=group, shard=s) for s in ("0", "1")] == [3, 3]
    # Both shards' oldest waiting entry (undelivered in shard 0, pending in shard 1) is 5 s old.
    assert all(5 <= value(text, "abacus_group_lag_seconds", group=group, shard=s) < 60 for s in ("0", "1"))
    assert value(text, "abacus_stream_status_up") == 1


def test_status_prints_every_shard(settings, redis_client):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    sharded, layout = _two_shards_with_work(settings, redis_client)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABACUS_")}
    env |= {"ABACUS_REDIS_URL": settings.redis_url or "", "ABACUS_STREAM_SHARDS": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "abacus.cli", "status"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    streams = [line.split() for line in result.stdout.splitlines() if line.startswith("stream ")]
    assert streams == [["stream", layout[0].stream + ":", "3", "entries"], ["stream", layout[1].stream + ":", "5", "entries"]]
    pending = [line.split()[2] for line in result.stdout.splitlines() if line.startswith(settings.consumer_group)]
    assert pending == ["0", "2"]
