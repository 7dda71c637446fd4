"""Stream entries to the rows ClickHouse stores, without rebuilding them in Python.

An entry's envelope is msgpack ``{"events": [[event_id, ...], ...], "v": 1}`` (shared/wire.py).
Each event inside is already what ClickHouse's MsgPack input format reads as a ``Tuple(...)``
value, so the worker only checks the frame around the events and slices them out: the rows are
parsed by ClickHouse in C++, not decoded and re-serialized under the GIL (that was most of the
worker's time). An envelope laid out any other way is decoded and its events re-encoded into the
same form; one that cannot be decoded is poison: retrying it can never succeed, so it goes
straight to the dead-letter stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from shared.wire import ENVELOPE_FIELD, StreamEnvelope
from worker.stream import Entry, Fields, field_dict

COLUMNS = [
    "event_id",
    "experiment_key",
    "variant_key",
    "session_id",
    "event_type",
    "path",
    "conversion_value",
    "metadata",
    "client_ts",
    "received_at",
]

_decoder = msgspec.msgpack.Decoder(StreamEnvelope)
_encoder = msgspec.msgpack.Encoder()
# What msgspec writes around the events array of a version-1 envelope: a two-entry map whose
# first key is "events", and after the array the key "v" with the value 1.
_FRAME_HEAD = b"\x82\xa6events"
_FRAME_TAIL = b"\xa1v\x01"


@dataclass
class Decoded:
    ids: list[bytes] = field(default_factory=list)
    """Entries whose events are in ``chunks``, in stream order."""
    chunks: list[bytes] = field(default_factory=list)
    """Per entry in ``ids``, its events as msgpack arrays (StreamEvent's layout), back to back."""
    rows_by_entry: list[int] = field(default_factory=list)
    row_count: int = 0
    poison: list[tuple[bytes, Fields, str]] = field(default_factory=list)
    """(entry id, raw fields, why) for entries that can never be inserted."""
    empty: list[bytes] = field(default_factory=list)
    """Entries whose data was trimmed away before they were read; nothing to insert."""

    @property
    def size(self) -> int:
        """Rows, counting each poison or empty entry as one: what a batch budget is charged."""
        return self.row_count + len(self.poison) + len(self.empty)

    def rows_msgpack(self) -> bytes:
        """Every event of the batch as one msgpack array each: a ``Tuple(...)`` value per row."""
        return b"".join(self.chunks)


def decode_entries(entries: list[Entry], into: Decoded | None = None) -> Decoded:
    """Frame entries into insertable chunks, appending to ``into`` when given (a batch read in chunks)."""
    out = into if into is not None else Decoded()
    # The loop runs once per entry read, so the common case (as ingest writes entries: the
    # envelope as the only field, a version-1 frame around up to 15 events) is checked inline;
    # anything else takes the general path below.
    ids, chunks, rows_by_entry = out.ids, out.chunks, out.rows_by_entry
    head, tail, field_name = _FRAME_HEAD, _FRAME_TAIL, ENVELOPE_FIELD
    rows = 0
    for entry_id, fields in entries:
        if type(fields) is list and fields and fields[0] == field_name:
            raw = fields[1]
            if raw.startswith(head) and raw.endswith(tail) and len(raw) >= 12:
                events = raw[8] - 0x90
                if 0 <= events <= 15 and len(raw) - 12 >= events:  # a fixarray: the count is in its marker
                    ids.append(entry_id)
                    chunks.append(raw[9:-3])
                    rows_by_entry.append(events)
                    rows += events
                    continue
        _decode_entry(entry_id, fields, out)
    out.row_count += rows
    return out


def _decode_entry(entry_id: bytes, fields: Fields, out: Decoded) -> None:
    if not fields:
        out.empty.append(entry_id)
        return
    raw = envelope_bytes(fields)
    if raw is None:
        out.poison.append((entry_id, fields, "entry has no envelope field"))
        return
    framed = framed_events(raw)
    if framed is None:
        try:
            events = _decoder.decode(raw).events
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            out.poison.append((entry_id, fields, f"undecodable envelope: {exc}"))
            return
        framed = _array_items(_encoder.encode(events), 0, None)
        assert framed is not None, "msgspec encodes a list as a msgpack array"
    chunk, rows = framed
    out.ids.append(entry_id)
    out.chunks.append(chunk)
    out.rows_by_entry.append(rows)
    out.row_count += rows


def framed_events(raw: bytes) -> tuple[bytes, int] | None:
    """The events of a version-1 envelope, without the array around them, and how many there are,
    read from the array's header alone; None if the envelope is laid out any other way."""
    if not (raw.startswith(_FRAME_HEAD) and raw.endswith(_FRAME_TAIL)):
        return None
    return _array_items(raw, len(_FRAME_HEAD), -len(_FRAME_TAIL))


def _array_items(data: bytes, start: int, end: int | None) -> tuple[bytes, int] | None:
    """``data[start:end]`` holds one msgpack array: its items' bytes and their count."""
    marker = data[start]
    if 0x90 <= marker <= 0x9F:  # fixarray: the count is in the marker
        header, items = 1, marker & 0x0F
    elif marker == 0xDC:  # array 16
        header, items = 3, int.from_bytes(data[start + 1 : start + 3], "big")
    elif marker == 0xDD:  # array 32
        header, items = 5, int.from_bytes(data[start + 1 : start + 5], "big")
    else:
        return None
    body = data[start + header : end]
    if len(body) < items:  # each item is at least one byte
        return None
    return body, items


def undecodable(fields: Fields) -> str | None:
    """Why an entry can never be stored, if its envelope does not decode; framing alone does not
    look inside the events, so an entry ClickHouse rejects is checked here before it is retried."""
    raw = envelope_bytes(fields) if fields else None
    if raw is None:
        return "entry has no envelope field"
    try:
        _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return f"undecodable envelope: {exc}"
    return None


def envelope_bytes(fields: dict | list) -> bytes | None:
    if isinstance(fields, list):
        # Ingest writes the envelope as the entry's only field; look further only if it is not.
        if fields[0] == ENVELOPE_FIELD:
            return fields[1]
        fields = field_dict(fields)
    return fields.get(ENVELOPE_FIELD)


def subset(decoded: Decoded, start: int, stop: int) -> Decoded:
    """The entries ``ids[start:stop]`` with their rows: used to isolate a bad entry by bisection."""
    part = Decoded()
    part.ids = decoded.ids[start:stop]
    part.chunks = decoded.chunks[start:stop]
    part.rows_by_entry = decoded.rows_by_entry[start:stop]
    part.row_count = sum(part.rows_by_entry)
    return part
