"""Stream entries to the rows ClickHouse stores, without rebuilding them in Python.

An entry's envelope is msgpack ``{"events": [[event_id, ...], ...], "v": 1}`` (shared/wire.py).
Each event inside is already what ClickHouse's MsgPack input format reads as a ``Tuple(...)``
value, so the worker decodes only the frame around the events, leaving each event as its msgpack
bytes (``msgspec.Raw``, which checks that each is one complete msgpack value): the rows are parsed
by ClickHouse in C++, not decoded and re-serialized under the GIL (that was most of the worker's
time). An envelope of another version is decoded and its events re-encoded into the same form;
one that cannot be decoded is poison: retrying it can never succeed, so it goes straight to the
dead-letter stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from shared.event_columns import COLUMN_NAMES
from shared.wire import ENVELOPE_FIELD, StreamEnvelope
from worker.stream import Entry, Fields, field_dict

COLUMNS = list(COLUMN_NAMES)
"""The table's columns in wire order (shared/event_columns.py)."""

FRAMED_VERSION = 1
"""The envelope version whose events are ``StreamEvent``'s layout as they are."""


class _Frame(msgspec.Struct):
    """A ``StreamEnvelope`` with its events left undecoded: the same slices of the entry that
    ClickHouse reads as rows, found and checked by msgspec rather than by matching bytes."""

    events: list[msgspec.Raw]
    v: int = FRAMED_VERSION


_framer = msgspec.msgpack.Decoder(_Frame)
_decoder = msgspec.msgpack.Decoder(StreamEnvelope)
_encoder = msgspec.msgpack.Encoder()


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
    # envelope as the only field, a version-1 frame) is handled inline; anything else, a broken
    # envelope included, takes the general path below, which says why.
    ids, chunks, rows_by_entry = out.ids, out.chunks, out.rows_by_entry
    frame_of, join, field_name = _framer.decode, b"".join, ENVELOPE_FIELD
    rows = 0
    for entry_id, fields in entries:
        if type(fields) is list and fields and fields[0] == field_name:
            try:
                frame = frame_of(fields[1])
            except (msgspec.DecodeError, msgspec.ValidationError):
                frame = None
            if frame is not None and frame.v == FRAMED_VERSION:
                events = frame.events
                ids.append(entry_id)
                chunks.append(join(events))
                rows_by_entry.append(len(events))
                rows += len(events)
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
        framed = b"".join(_encoder.encode(event) for event in events), len(events)
    chunk, rows = framed
    out.ids.append(entry_id)
    out.chunks.append(chunk)
    out.rows_by_entry.append(rows)
    out.row_count += rows


def framed_events(raw: bytes) -> tuple[bytes, int] | None:
    """The events of a version-1 envelope, back to back without the array around them, and how
    many there are; None if the envelope is of another version or does not decode."""
    try:
        frame = _framer.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if frame.v != FRAMED_VERSION:
        return None
    return b"".join(frame.events), len(frame.events)


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
