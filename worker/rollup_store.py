"""The rollup's ClickHouse side: folded events and signed per-minute total differences in, session
states out.

Each roller step writes under deduplication tokens named after the stream range it folded, so a
step redone after a crash (same range, same prior state) stores nothing twice. Every folded event
row names the stream entry it was folded up to (``folded_entry``), and a session is read back as
of a step's start: rows a step wrote before it was bookmarked (it sends its events while still
folding) count only once the share's bookmark has passed them.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from clickhouse_connect.driver.client import Client

from shared.clickhouse_cluster import clear_table
from shared.event_columns import EVENT_COLUMNS, select_columns
from shared.rollup.protocol_ids import id_key
from shared.rollup.results_sql import (
    COHORT_MINUTE,
    ROLLUP_EVENTS_SOURCE,
    SESSION_SUMMARY_STRUCTURE,
    shard_condition,
    summary_totals_sql,
    variant_totals_sql,
)
from shared.rollup.session import SessionState
from shared.rollup.totals import TOTAL_FIELDS
from worker.sink import EVENTS_STRUCTURE, ClickHouseSink

SessionKey = tuple[str, str]
"""(experiment_key, session_id)"""

EVENTS_TABLE = "abacus.rollup_events"
COHORT_TOTALS_TABLE = "abacus.rollup_cohort_totals"
# The columns of abacus.events a session's state is read back from: the only ones the roller keeps.
_KEPT = ("event_id", "experiment_key", "variant_key", "session_id", "event_type", "conversion_value", "received_at")
_KEPT_COLUMNS = ", ".join(column.name for column in EVENT_COLUMNS if column.name in _KEPT)
_KEPT_SELECT = select_columns(_KEPT, "e")
_TOTALS_COLUMNS = ["experiment_key", "variant_key", "cohort_minute", *TOTAL_FIELDS]
# Keeps each lookup's SQL text small; a step's misses are looked up in a few queries at most.
_LOOKUP_CHUNK = 5000
_encoder = msgspec.msgpack.Encoder()


class SummaryRow(msgspec.Struct, array_like=True, gc=False):
    """One signed session summary per variant, a ``SESSION_SUMMARY_STRUCTURE`` row: encoded as
    a msgpack array of its fields in this order (tests/rollup/test_session_state.py checks they
    are ``_SUMMARY_COLUMNS``' names). Mutable only for its sign: a step subtracts the rows the
    last one added by flipping them to -1 (worker/rollup_fold.py), and gc=False as a roller caches
    one per variant of hundreds of thousands of sessions."""

    sign: int
    experiment_key: str
    variant_key: str
    cohort_minute: int
    s_impressions: int
    s_cta_clicks: int
    s_form_starts: int
    s_form_submits: int
    s_conversions: int
    s_value: float
    s_exposed_variants: int


def load_sessions(client: Client, keys: list[SessionKey], folded_until: int) -> dict[SessionKey, SessionState]:
    """The state of each given session that has one, as of the stream entry ``folded_until``
    (``entry_number``; a step's start): only rows folded up to it count, and of an event's copies
    the one folded last (the copy abacus.events keeps, written as ``corrected``, beats the raw
    copies of its step). A session never folded has none."""
    by_experiment: dict[str, list[str]] = {}
    for experiment_key, session_id in keys:
        by_experiment.setdefault(experiment_key, []).append(session_id)
    found: dict[SessionKey, SessionState] = {}
    for experiment_key, session_ids in by_experiment.items():
        for start in range(0, len(session_ids), _LOOKUP_CHUNK):
            # %(name)s: bound client-side into the SQL text, so long lists do not travel in a URL.
            rows = client.query(
                "SELECT session_id, groupArray(variant_key), groupArray(event_id), groupArray(copy.1), "
                "groupArray(copy.2), groupArray(copy.3) FROM ("
                "SELECT session_id, variant_key, event_id, argMax((event_type, "
                "if(event_type = 'conversion', ifNull(conversion_value, 0), 0), toUnixTimestamp64Milli(received_at)), "
                f"(folded_entry, corrected)) AS copy FROM {EVENTS_TABLE} "
                "WHERE experiment_key = %(experiment)s AND session_id IN %(sessions)s "
                f"AND folded_entry <= toUInt128('{int(folded_until)}') "
                "GROUP BY session_id, variant_key, event_id) GROUP BY session_id",
                parameters={"experiment": experiment_key, "sessions": tuple(session_ids[start : start + _LOOKUP_CHUNK])},
            ).result_rows
            for session_id, *arrays in rows:
                found[(experiment_key, session_id)] = SessionState.from_arrays(*arrays)
    return found


def entry_number(entry_id: bytes | str) -> int:
    """A stream entry id as one number in the id order (ms * 2^64 + seq): ``folded_entry``."""
    ms, seq = id_key(entry_id)
    return (ms << 64) | seq


def stored_copies(client: Client, keys: list[tuple[str, str, str, str]]) -> list[tuple]:
    """The copy abacus.events keeps of each (experiment, variant, session, event_id), as rows in
    ``StreamEvent``'s layout (timestamps in epoch ms)."""
    rows: list[tuple] = []
    for start in range(0, len(keys), _LOOKUP_CHUNK):
        rows += client.query(
            "SELECT event_id, experiment_key, variant_key, session_id, event_type, path, conversion_value, metadata, "
            "toUnixTimestamp64Milli(client_ts), toUnixTimestamp64Milli(received_at) FROM abacus.events FINAL "
            "WHERE (experiment_key, variant_key, session_id, event_id) IN %(keys)s",
            parameters={"keys": tuple(keys[start : start + _LOOKUP_CHUNK])},
        ).result_rows
    return rows


def count_sessions(client: Client, shard: int, shards: int) -> int:
    return client.query(
        f"SELECT uniqExact(experiment_key, session_id) FROM {EVENTS_TABLE} WHERE {shard_condition(shard, shards)}"
    ).result_rows[0][0]


def stored_session_keys(client: Client, shard: int, shards: int, block: Callable[[list[str], list[str]], None]) -> None:
    """Hand every folded (experiment_key, session_id) of a share to ``block``, a block of columns
    at a time, so memory stays bounded however many sessions there are."""
    query = f"SELECT DISTINCT experiment_key, session_id FROM {EVENTS_TABLE} WHERE {shard_condition(shard, shards)}"
    with client.query_column_block_stream(query) as stream:
        for experiment_keys, session_ids in stream:
            block(experiment_keys, session_ids)


def summary_rows(state: SessionState, experiment_key: str) -> tuple[SummaryRow, ...]:
    """The session's summary (``SessionState.summary()``) as rows added (+1), cached in the
    state until it changes, so a step subtracts what the last one added without computing it
    again. The caller owns the cached rows once the state has changed: ``summaries`` flips
    them to -1 as it encodes them."""
    rows = state.rows
    if rows is None:
        minute = state.cohort_minute
        variants = state.variants
        exposed = 0
        for variant in variants.values():
            if variant.impressions > 0:
                exposed += 1
        rows = state.rows = tuple(
            [
                SummaryRow(
                    1,
                    experiment_key,
                    variant_key,
                    minute,
                    variant.impressions,
                    variant.cta_clicks,
                    variant.form_starts,
                    variant.form_submits,
                    variant.conversions,
                    variant.value,
                    exposed,
                )
                for variant_key, variant in variants.items()
            ]
        )
    return rows


def summaries(rows: list[SummaryRow]) -> bytes:
    """A step's summary rows as msgpack, one array per row back to back (``insert_summaries``):
    one encoder call for the whole step."""
    return _rows(rows) if rows else b""


def insert_summaries(sink: ClickHouseSink, rows: bytes, token: str) -> None:
    """Add a step's total differences: ClickHouse computes them from the signed session
    summaries (``SESSION_SUMMARY_STRUCTURE`` msgpack rows, back to back) with the same SQL as
    the results over events."""
    if not rows:
        return
    # Always a token: without one ClickHouse deduplicates by the block's content, and two steps
    # can legitimately add identical difference rows (one new session each, say).
    insert = (
        f"INSERT INTO {COHORT_TOTALS_TABLE} ({', '.join(_TOTALS_COLUMNS)}) "
        f"SETTINGS insert_deduplication_token = '{token}', insert_deduplicate = 1 " + summary_totals_sql("{source}")
    )
    sink.insert_msgpack(insert, SESSION_SUMMARY_STRUCTURE, rows)


def insert_events(sink: ClickHouseSink, rows: bytes, count: int, token: str, folded_entry: int, corrected: bool = False) -> None:
    """Folded events (``event_rows``, ``count`` of them), stored as folded up to the stream entry
    ``folded_entry`` (``entry_number``); ``corrected``: the copies abacus.events keeps of events
    that arrived with other contents. ClickHouse parses the msgpack (worker/sink.py)."""
    if not count:
        return
    insert = (
        f"INSERT INTO {EVENTS_TABLE} ({_KEPT_COLUMNS}, folded_entry, corrected) "
        f"SETTINGS insert_deduplication_token = '{token}', insert_deduplicate = 1 "
        f"SELECT {_KEPT_SELECT}, toUInt128('{int(folded_entry)}'), {int(corrected)} FROM {{source}}"
    )
    sink.insert_msgpack(insert, EVENTS_STRUCTURE, rows)


def event_rows(events: list) -> bytes:
    """Events (``StreamEvent``s' layout) as the msgpack rows ``insert_events`` takes."""
    return _rows(events) if events else b""


def _rows(values: list) -> bytes:
    """msgpack values back to back, one per row, as ClickHouse's MsgPack format reads them."""
    encoded = _encoder.encode(values)
    # One msgpack array of the values: drop its header, leaving one value per row.
    marker = encoded[0]
    header = 1 if marker & 0xF0 == 0x90 else 3 if marker == 0xDC else 5
    return encoded[header:]


def events_sink(clickhouse) -> ClickHouseSink:  # type: ignore[no-untyped-def]
    """The roller's sink: its own inserts (``insert_events``, ``insert_summaries``) go through
    ``insert_msgpack``, failures classified as the workers' are."""
    return ClickHouseSink(clickhouse)


def rebuild_from_events(client: Client, shard: int = 0, shards: int = 1, cluster: str = "") -> None:
    """Recompute a share of the rollup from ``abacus.events``: copy one snapshot of its events,
    then compute the totals from that copy (not from the events again, which workers may have
    added to meanwhile), so folded events and totals agree with each other."""
    condition = shard_condition(shard, shards)
    for table in (EVENTS_TABLE, COHORT_TOTALS_TABLE):
        client.command(clear_table(table, cluster, None if shards == 1 else condition))
    # No deduplication: a rebuild must store its rows even if an earlier one produced the same.
    once = {"insert_deduplicate": 0}
    # folded_entry 0: the copy counts for every step after the rebuild, which starts at the stream's start.
    client.command(
        f"INSERT INTO {EVENTS_TABLE} ({_KEPT_COLUMNS}) SELECT {_KEPT_COLUMNS} FROM abacus.events FINAL WHERE {condition}",
        settings=once,
    )
    source = ROLLUP_EVENTS_SOURCE.replace("{shard_filter}", f"WHERE {condition}")
    client.command(
        f"INSERT INTO {COHORT_TOTALS_TABLE} ({', '.join(_TOTALS_COLUMNS)}) {variant_totals_sql(source, COHORT_MINUTE)}",
        settings=once,
    )
