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
