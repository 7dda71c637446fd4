"""Framing stream entries into ClickHouse rows (worker/rows.py): pure logic, no servers.

The common case is framed inline in ``decode_entries``'s loop; these tests hold it to the same
answers as the general path (``framed_events`` and a full decode) for every layout, and send
every envelope that cannot be stored the dead-letter way."""

from __future__ import annotations

import msgspec
import pytest

from shared.wire import StreamEnvelope, StreamEvent
from worker.rows import decode_entries, framed_events


def event(i: int) -> StreamEvent:
    return StreamEvent(
        event_id=f"ev-{i}",
        experiment_key="homepage_hero_test",
        variant_key="control",
        session_id=f"session_{i}",
        event_type="impression",
        path="/",
        conversion_value=None,
        metadata_json="{}",
        client_ts_ms=None,
        received_at_ms=1_780_000_000_123,
    )


def packed(n: int) -> bytes:
    return msgspec.msgpack.encode(StreamEnvelope(events=[event(i) for i in range(n)]))


def stored_event_ids(rows: bytes, count: int) -> list[str]:
    """The framed rows, back to back, read as one msgpack array."""
    return [row[0] for row in msgspec.msgpack.decode(b"\xdd" + count.to_bytes(4, "big") + rows)]


@pytest.mark.parametrize("events", [0, 1, 2, 15, 16, 500])
def test_every_array_size_frames_as_the_general_path_does(events):
    raw = packed(events)
    decoded = decode_entries([(b"1-1", [b"e", raw])])
    general = framed_events(raw)
    assert general is not None
    assert decoded.ids == [b"1-1"]
    assert decoded.chunks == [general[0]]
    assert decoded.rows_by_entry == [general[1]] == [events]
    assert decoded.row_count == events
    assert stored_event_ids(decoded.rows_msgpack(), events) == [f"ev-{i}" for i in range(events)]


def test_entries_of_all_kinds_keep_stream_order_and_counts():
    odd_layout = msgspec.msgpack.encode({"v": 1, "events": [event(7)]})  # keys in another order
    entries = [
        (b"1-1", [b"e", packed(2)]),
        (b"1-2", {b"e": packed(1)}),  # claimed entries come as dicts
        (b"1-3", [b"x", b"1", b"e", packed(3)]),  # the envelope not first
        (b"1-4", None),  # trimmed after delivery
        (b"1-5", [b"e", odd_layout]),
        (b"1-6", [b"y", b"2"]),  # no envelope
        (b"1-7", [b"e", packed(16)]),  # array 16
    ]
    decoded = decode_entries(entries)
    assert decoded.ids == [b"1-1", b"1-2", b"1-3", b"1-5", b"1-7"]
    assert decoded.rows_by_entry == [2, 1, 3, 1, 16]
    assert decoded.row_count == 23
    assert decoded.empty == [b"1-4"]
    assert [(entry_id, why) for entry_id, _, why in decoded.poison] == [(b"1-6", "entry has no envelope field")]
    assert len(stored_event_ids(decoded.rows_msgpack(), 23)) == 23


def test_appending_to_a_batch_adds_to_its_counts():
    batch = decode_entries([(b"1-1", [b"e", packed(2)])])
    decode_entries([(b"1-2", [b"e", packed(3)]), (b"1-3", None)], into=batch)
    assert batch.ids == [b"1-1", b"1-2"]
    assert batch.row_count == 5
    assert batch.size == 6  # the empty entry counts against the batch budget


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x82\xa6events\xa1v\x01",  # the frame with no array in it
        b"\x82\xa6events\x93\xa1v\x01",  # claims three events and holds none
        b"\x82\xa6events\x92\xc0",  # cut short: no tail
        b"\xc1 not msgpack",
        b"\x82\xa6events\x91\x93\xa1a\xa1b\xa1v\x01",  # an event cut short: the tail read as its last item
        b"\x81\xa1v\x01",  # no events at all
        b"\x82\xa6events\xa1x\xa1v\x01",  # events not an array
        b"\x82\xa6events\x90\xa1v\xa1x",  # a version that is not a number
    ],
)
def test_broken_envelopes_are_poison_not_rows(raw):
    decoded = decode_entries([(b"1-1", [b"e", raw])])
    assert decoded.ids == []
    assert decoded.row_count == 0
    [(entry_id, fields, why)] = decoded.poison
    assert entry_id == b"1-1" and fields == [b"e", raw]
    assert why.startswith("undecodable envelope")


def test_another_envelope_version_is_decoded_and_its_events_re_encoded():
    raw = msgspec.msgpack.encode({"events": [event(1), event(2)], "v": 2})
    assert framed_events(raw) is None
    decoded = decode_entries([(b"1-1", [b"e", raw])])
    assert decoded.rows_by_entry == [2] and decoded.poison == []
    assert decoded.chunks == [b"".join(msgspec.msgpack.encode(e) for e in (event(1), event(2)))]


def test_the_rows_are_the_bytes_ingest_wrote():
    entry = packed(3)
    [chunk] = decode_entries([(b"1-1", [b"e", entry])]).chunks
    assert chunk == b"".join(msgspec.msgpack.encode(event(i)) for i in range(3))
    assert chunk in entry
