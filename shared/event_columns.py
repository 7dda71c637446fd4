"""The one definition of an event row: each column of ``abacus.events``, in the order the stream
carries it (``shared/wire.py`` ``StreamEvent``, an array-like struct, so its field order is the
wire layout).

The worker's insert is generated from this list: the column list, the ``Tuple(...)`` type
ClickHouse reads each stream event as, and the ``e.N`` select list that turns the wire values into
the table's. The migration that created the table (``shared/clickhouse_schema/0001_events.sql``)
is history and is not rewritten; tests/test_event_columns.py checks that the table ClickHouse
reports after migrating, ``StreamEvent``'s fields and the README's table for analysts agree
with this list.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_DATETIME64_MS = 10_413_791_999_999
"""2299-12-31 23:59:59.999, DateTime64(3)'s last instant, in epoch milliseconds."""


@dataclass(frozen=True, slots=True)
class EventColumn:
    name: str
    """Column of ``abacus.events``."""
    table_type: str
    """Its type as ClickHouse reports it (DESCRIBE / system.columns), codecs aside."""
    wire_field: str
    """The ``StreamEvent`` field that carries it."""
    wire_type: str
    """The ClickHouse type the stream's msgpack value is read as, inside the ``Tuple(...)``."""
    epoch_ms: bool = False
    """The wire value is epoch milliseconds (unsigned: a negative one is refused, not wrapped)
    and the column a DateTime64(3): converted on the way in, refused beyond DateTime64's range."""


EVENT_COLUMNS: tuple[EventColumn, ...] = (
    EventColumn("event_id", "String", "event_id", "String"),
    EventColumn("experiment_key", "LowCardinality(String)", "experiment_key", "String"),
    EventColumn("variant_key", "LowCardinality(String)", "variant_key", "String"),
    EventColumn("session_id", "String", "session_id", "String"),
    EventColumn("event_type", "LowCardinality(String)", "event_type", "String"),
    EventColumn("path", "String", "path", "String"),
    EventColumn("conversion_value", "Nullable(Float64)", "conversion_value", "Nullable(Float64)"),
    EventColumn("metadata", "String", "metadata_json", "String"),
    EventColumn("client_ts", "Nullable(DateTime64(3, 'UTC'))", "client_ts_ms", "Nullable(UInt64)", epoch_ms=True),
    EventColumn("received_at", "DateTime64(3, 'UTC')", "received_at_ms", "UInt64", epoch_ms=True),
)

COLUMN_NAMES: tuple[str, ...] = tuple(column.name for column in EVENT_COLUMNS)
"""The table's columns in wire order: the insert's column list."""


def wire_structure(alias: str = "e") -> str:
    """One stream event as ClickHouse's MsgPack input reads it: a single ``Tuple(...)`` column."""
    return f"{alias} Tuple({', '.join(column.wire_type for column in EVENT_COLUMNS)})"


def select_list(alias: str = "e") -> str:
    """The wire tuple's elements as the table's values, in ``COLUMN_NAMES`` order."""
    return ", ".join(_select(f"{alias}.{position}", column) for position, column in enumerate(EVENT_COLUMNS, start=1))


def select_columns(names: tuple[str, ...], alias: str = "e") -> str:
    """The values of the named columns (in ``COLUMN_NAMES`` order) out of the wire tuple: for a
    table that keeps only some of the event's columns (the roller's abacus.rollup_events)."""
    return ", ".join(
        _select(f"{alias}.{position}", column) for position, column in enumerate(EVENT_COLUMNS, start=1) if column.name in names
    )


def out_of_range(alias: str = "e") -> str:
    """A condition true for a row whose timestamps DateTime64(3) cannot hold (a NULL one can)."""
    checks = []
    for position, column in enumerate(EVENT_COLUMNS, start=1):
        if column.epoch_ms:
            value = f"{alias}.{position}"
            if column.wire_type.startswith("Nullable("):
                value = f"ifNull({value}, 0)"
            checks.append(f"{value} > {MAX_DATETIME64_MS}")
    return " OR ".join(checks)


def _select(element: str, column: EventColumn) -> str:
    if column.epoch_ms:
        return f"fromUnixTimestamp64Milli(toInt64({element}), 'UTC')"
    return element
