"""The rollup's ClickHouse side: session states in, signed total differences and states out.

Each roller step writes under deduplication tokens named after the stream range it folded, so a
step redone after a crash (same range, same prior state) stores nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable

from clickhouse_connect.driver.client import Client

from shared.rollup.results_sql import ROLLUP_SESSIONS_SOURCE, variant_totals_sql
from shared.rollup.session import SessionState
from shared.rollup.totals import TOTAL_FIELDS

SessionKey = tuple[str, str]
"""(experiment_key, session_id)"""

SESSIONS_TABLE = "abacus.rollup_sessions"
TOTALS_TABLE = "abacus.rollup_totals"
_SESSION_COLUMNS = ["experiment_key", "session_id", "version", "variant_keys", "event_ids", "event_types", "event_values"]
_TOTALS_COLUMNS = ["experiment_key", "variant_key", *TOTAL_FIELDS]
# Keeps each lookup's SQL text small; a step's misses are looked up in a few queries at most.
_LOOKUP_CHUNK = 5000


def load_sessions(client: Client, keys: list[SessionKey]) -> dict[SessionKey, SessionState]:
    """The stored state of each given session that has one (a session never seen has none)."""
    by_experiment: dict[str, list[str]] = {}
    for experiment_key, session_id in keys:
        by_experiment.setdefault(experiment_key, []).append(session_id)
    found: dict[SessionKey, SessionState] = {}
    for experiment_key, session_ids in by_experiment.items():
        for start in range(0, len(session_ids), _LOOKUP_CHUNK):
            # %(name)s: bound client-side into the SQL text, so long lists do not travel in a URL.
            rows = client.query(
                f"SELECT session_id, variant_keys, event_ids, event_types, event_values FROM {SESSIONS_TABLE} FINAL "
                "WHERE experiment_key = %(experiment)s AND session_id IN %(sessions)s",
                parameters={"experiment": experiment_key, "sessions": tuple(session_ids[start : start + _LOOKUP_CHUNK])},
            ).result_rows
            for session_id, *arrays in rows:
                found[(experiment_key, session_id)] = SessionState.from_arrays(*arrays)
    return found


def stored_session_keys(client: Client, block: Callable[[list[str], list[str]], None]) -> None:
    """Hand every stored (experiment_key, session_id) to ``block``, a block of columns at a time,
    so memory stays bounded however many sessions there are."""
    with client.query_column_block_stream(f"SELECT experiment_key, session_id FROM {SESSIONS_TABLE}") as stream:
        for experiment_keys, session_ids in stream:
            block(experiment_keys, session_ids)


def insert_totals(client: Client, differences: dict[tuple[str, str], list[float]], token: str) -> None:
    if not differences:
        return
    rows = [[experiment_key, variant_key, *vector] for (experiment_key, variant_key), vector in differences.items()]
    client.insert(TOTALS_TABLE, rows, column_names=_TOTALS_COLUMNS, settings=_dedup(token))


def insert_sessions(client: Client, states: dict[SessionKey, SessionState], version: int, token: str) -> None:
    if not states:
        return
    # Column-oriented, the arrays passed as the states hold them: no per-event Python work here.
    columns: list[list] = [[] for _ in _SESSION_COLUMNS]
    experiment_keys, session_ids, versions, variant_keys, event_ids, event_types, event_values = columns
    for (experiment_key, session_id), state in states.items():
        experiment_keys.append(experiment_key)
        session_ids.append(session_id)
        variant_keys.append(state.variant_keys)
        event_ids.append(state.event_ids)
        event_types.append(state.event_types)
        event_values.append(state.event_values)
    versions.extend([version] * len(states))
    client.insert(SESSIONS_TABLE, columns, column_names=_SESSION_COLUMNS, column_oriented=True, settings=_dedup(token))


def rebuild_from_events(client: Client) -> None:
    """Recompute the rollup from ``abacus.events``: the session states from one snapshot of the
    events, then the totals from those states (not from the events again, which workers may have
    added to meanwhile), so states and totals agree with each other."""
    client.command(f"TRUNCATE TABLE {SESSIONS_TABLE}")
    client.command(f"TRUNCATE TABLE {TOTALS_TABLE}")
    # No deduplication: a rebuild must store its rows even if an earlier one produced the same.
    once = {"insert_deduplicate": 0}
    client.command(
        f"INSERT INTO {SESSIONS_TABLE} ({', '.join(_SESSION_COLUMNS)}) "
        "SELECT experiment_key, session_id, 0, groupArray(variant_key), groupArray(event_id), groupArray(event_type), "
        "groupArray(if(event_type = 'conversion', ifNull(conversion_value, 0), 0)) "
        "FROM abacus.events FINAL GROUP BY experiment_key, session_id",
        settings=once,
    )
    client.command(
        f"INSERT INTO {TOTALS_TABLE} ({', '.join(_TOTALS_COLUMNS)}) {variant_totals_sql(ROLLUP_SESSIONS_SOURCE)}",
        settings=once,
    )


def _dedup(token: str) -> dict[str, object]:
    # Always a token: without one ClickHouse deduplicates by the block's content, and two steps
    # can legitimately add identical difference rows (one new session each, say).
    return {"insert_deduplication_token": token, "insert_deduplicate": 1}
