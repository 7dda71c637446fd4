"""The one definition of the event row (shared/event_columns.py) against what it describes: the
table the migrations create (as chDB reports it after migrating), the stream's ``StreamEvent``,
and an insert generated from it that stores every column as written."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from shared.event_columns import COLUMN_NAMES, EVENT_COLUMNS, MAX_DATETIME64_MS, select_list, wire_structure
from shared.wire import StreamEnvelope, StreamEvent
from worker.rows import decode_entries
from worker.sink import ClickHouseSink, RejectedBatch


def test_the_migrated_table_has_exactly_these_columns_in_this_order(clickhouse):
    described = clickhouse.client().query("DESCRIBE TABLE abacus.events").result_rows
    assert [(row[0], row[1]) for row in described] == [(c.name, c.table_type) for c in EVENT_COLUMNS]


def test_the_readme_describes_these_columns_for_analysts():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("**`abacus.events`**", 1)[1].split("\n\n**", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, re.MULTILINE)
    assert [(name, kind.strip()) for name, kind in rows] == [(c.name, c.table_type) for c in EVENT_COLUMNS]


def _clickhouse_type(info: msgspec.inspect.Type) -> str:
    """The ClickHouse type msgpack values of a ``StreamEvent`` field are read as."""
    if isinstance(info, msgspec.inspect.UnionType):
        [inner] = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        return f"Nullable({_clickhouse_type(inner)})"
    simple = {msgspec.inspect.StrType: "String", msgspec.inspect.FloatType: "Float64", msgspec.inspect.IntType: "UInt64"}
    return simple[type(info)]


def test_stream_event_carries_the_columns_in_wire_order_with_their_types():
    info = msgspec.inspect.type_info(StreamEvent)
    assert isinstance(info, msgspec.inspect.StructType) and info.array_like
    assert [(f.name, _clickhouse_type(f.type)) for f in info.fields] == [(c.wire_field, c.wire_type) for c in EVENT_COLUMNS]


def test_the_generated_sql_follows_the_definition():
    assert wire_structure("e").startswith("e Tuple(String, String")
    assert select_list("e").count("e.") == len(COLUMN_NAMES)
    assert select_list("e").endswith("fromUnixTimestamp64Milli(toInt64(e.10), 'UTC')")


def _event(i: int, **changes: object) -> StreamEvent:
    event = StreamEvent(
        event_id=f"ev-{i}",
        experiment_key="exp",
        variant_key="control" if i % 2 else "treatment",
        session_id=f"s{i}",
        event_type="conversion",
        path=f"/p/{i}",
        conversion_value=1.5 * i,
        metadata_json='{"k": 1}',
        client_ts_ms=1_780_000_000_000 + i,
        received_at_ms=1_780_000_001_000 + i,
    )
    return msgspec.structs.replace(event, **changes)


def _insert(clickhouse, events: list[StreamEvent], entry: bytes = b"1-1") -> None:  # noqa: ANN001
    raw = msgspec.msgpack.encode(StreamEnvelope(events=events))
    ClickHouseSink(clickhouse).insert(decode_entries([(entry, [b"e", raw])]))


def test_both_exports_are_the_events_as_stored():
    # The export route and the export job take their column list from the one definition.
    from jobs.export import EXPORTED_COLUMNS
    from query_api.export_routes import EVENT_COLUMNS as ROUTE_COLUMNS

    assert ROUTE_COLUMNS == EXPORTED_COLUMNS == ", ".join(COLUMN_NAMES)


def test_an_insert_stores_every_field_in_its_column(clean_clickhouse):
    events = [_event(1), _event(2, conversion_value=None, client_ts_ms=None)]
    _insert(clean_clickhouse, events)
    columns = ", ".join(COLUMN_NAMES)
    stored = clean_clickhouse.client().query(
        f"SELECT {columns}, toUnixTimestamp64Milli(client_ts), toUnixTimestamp64Milli(received_at) "
        "FROM abacus.events ORDER BY event_id"
    )
    for event, row in zip(events, stored.result_rows):
        *values, client_ms, received_ms = row
        expected = msgspec.structs.astuple(event)
        assert values[:8] == list(expected[:8])
        assert (client_ms, received_ms) == (event.client_ts_ms, event.received_at_ms)


@pytest.mark.parametrize("field", ["client_ts_ms", "received_at_ms"])
def test_a_timestamp_beyond_datetime64_is_refused(clean_clickhouse, field):
    with pytest.raises(RejectedBatch, match="DateTime64 range"):
        _insert(clean_clickhouse, [_event(1, **{field: MAX_DATETIME64_MS + 1})])
