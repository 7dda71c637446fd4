"""Stream entries to ClickHouse columns. An entry that cannot be decoded is poison: retrying it
can never succeed, so it goes straight to the dead-letter stream."""

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


@dataclass
class Decoded:
    ids: list[bytes] = field(default_factory=list)
    """Entries whose events are in ``columns``, in stream order."""
    columns: list[list] = field(default_factory=lambda: [[] for _ in COLUMNS])
    rows_by_entry: list[int] = field(default_factory=list)
    poison: list[tuple[bytes, Fields, str]] = field(default_factory=list)
    """(entry id, raw fields, why) for entries that can never be inserted."""
    empty: list[bytes] = field(default_factory=list)
    """Entries whose data was trimmed away before they were read; nothing to insert."""

    @property
    def row_count(self) -> int:
        return len(self.columns[0])

    @property
    def size(self) -> int:
        """Rows, counting each poison or empty entry as one: what a batch budget is charged."""
        return self.row_count + len(self.poison) + len(self.empty)


def decode_entries(entries: list[Entry], into: Decoded | None = None) -> Decoded:
    """Decode entries into columns, appending to ``into`` when given (a batch read in chunks)."""
    out = into if into is not None else Decoded()
    cols = out.columns
    for entry_id, fields in entries:
        if not fields:
            out.empty.append(entry_id)
            continue
        raw = envelope_bytes(fields)
        if raw is None:
            out.poison.append((entry_id, fields, "entry has no envelope field"))
            continue
        try:
            envelope = _decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            out.poison.append((entry_id, fields, f"undecodable envelope: {exc}"))
            continue
        out.ids.append(entry_id)
        out.rows_by_entry.append(len(envelope.events))
        for event in envelope.events:
            cols[0].append(event.event_id)
            cols[1].append(event.experiment_key)
            cols[2].append(event.variant_key)
            cols[3].append(event.session_id)
            cols[4].append(event.event_type)
            cols[5].append(event.path)
            cols[6].append(event.conversion_value)
            cols[7].append(event.metadata_json)
            cols[8].append(event.client_ts_ms)
            cols[9].append(event.received_at_ms)
    return out


def envelope_bytes(fields: dict | list) -> bytes | None:
    if isinstance(fields, list):
        # Ingest writes the envelope as the entry's only field; look further only if it is not.
        if fields[0] == ENVELOPE_FIELD:
            return fields[1]
        fields = field_dict(fields)
    return fields.get(ENVELOPE_FIELD)


def subset(decoded: Decoded, start: int, stop: int) -> Decoded:
    """The entries ``ids[start:stop]`` with their rows: used to isolate a bad entry by bisection."""
    first_row = sum(decoded.rows_by_entry[:start])
    last_row = first_row + sum(decoded.rows_by_entry[start:stop])
    part = Decoded()
    part.ids = decoded.ids[start:stop]
    part.rows_by_entry = decoded.rows_by_entry[start:stop]
    part.columns = [column[first_row:last_row] for column in decoded.columns]
    return part
