"""The roller's reads of a stream shard in chunks, each next one asked for before the one in hand
is used (worker/rollup_stream.py): every entry once, in order, within the bounds asked for."""

from __future__ import annotations

import pytest
import redis

from worker.rollup_stream import RollupStream

STREAM = "abacus:test:chunks"


@pytest.fixture()
def stream(redis_client: redis.Redis) -> tuple[RollupStream, list[bytes]]:
    ids = [redis_client.xadd(STREAM, {b"e": str(i).encode()}) for i in range(23)]
    return RollupStream(redis.Redis(connection_pool=redis_client.connection_pool), STREAM, "workers"), ids


@pytest.mark.parametrize(("count", "chunk"), [(None, 5), (None, 23), (None, 50), (12, 5), (10, 5), (1, 5), (30, 7)])
def test_chunks_hold_every_entry_once_in_order_up_to_the_count(stream, count, chunk):
    rollup_stream, ids = stream
    after, until = ids[2], f"({ids[20].decode()}"  # entries 3..19
    chunks = list(rollup_stream.read_chunks(after, until, count, chunk))
    expected = ids[3:20][: count if count is not None else None]
    assert [entry_id for part in chunks for entry_id, _ in part] == expected
    assert all(0 < len(part) <= chunk for part in chunks)


def test_nothing_to_read_yields_no_chunk(stream):
    rollup_stream, ids = stream
    assert list(rollup_stream.read_chunks(ids[-1], "+", None, 5)) == []


def test_a_read_left_half_way_leaves_the_connections_usable(stream, redis_client):
    rollup_stream, ids = stream
    chunks = rollup_stream.read_chunks(b"0-0", "+", None, 5)
    first = next(chunks)  # the next reply is already asked for
    chunks.close()
    assert [entry_id for entry_id, _ in first] == ids[:5]
    # Every connection back in the pool answers its own command, not the abandoned reply.
    for _ in range(3):
        assert rollup_stream.read_range(ids[4], "+", 2) == [[ids[5], [b"e", b"5"]], [ids[6], [b"e", b"6"]]]
    assert list(rollup_stream.read_chunks(ids[19], "+", None, 2))[0][0][0] == ids[20]


def test_a_share_decodes_only_the_entries_holding_its_experiments() -> None:
    import msgspec

    from shared.wire import StreamEnvelope, StreamEvent
    from worker.rollup_fold import decode_into

    def event(n: int, experiment_key: str) -> StreamEvent:
        return StreamEvent(f"e{n}", experiment_key, "control", f"s{n}", "impression", "/", None, "{}", None, 1_700_000_000_000)

    encode = msgspec.msgpack.encode
    entries = [
        (b"1-1", [b"e", encode(StreamEnvelope(events=[event(1, "ours")]))]),
        (b"1-2", [b"e", encode(StreamEnvelope(events=[event(2, "theirs")]))]),
        (b"1-3", [b"e", encode(StreamEnvelope(events=[event(3, "theirs"), event(4, "ours")]))]),  # mixed: whole
        (b"1-4", [b"e", b"\xc1 not msgpack"]),  # poison: skipped either way
    ]
    events: list = []
    decode_into(events, entries, set(), lambda key: key == "ours")
    assert [(e.event_id, e.experiment_key) for e in events] == [("e1", "ours"), ("e3", "theirs"), ("e4", "ours")]
    everything: list = []
    decode_into(everything, entries, set())
    assert [e.event_id for e in everything] == ["e1", "e2", "e3", "e4"]
