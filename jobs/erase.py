"""Erasure (GDPR): every event of one session id removed from ClickHouse, the rollup recomputed
from what is left, and an audit row of who asked and when (the id only as a hash).

The events go by lightweight DELETE (rows hidden at once, removed by merges), from abacus.events
and from the roller's own copy (abacus.rollup_events). The rollup's totals are then corrected
exactly by a rebuild request: each share recomputes its totals from abacus.events, and results
come from the events until it has. Running it again deletes nothing more and writes the same
audit row (keyed by job id), so rq may retry it safely.

Before deleting, the job waits until the stream has been trimmed past every entry it held when
the job started: those entries are then stored by the workers and folded by the roller, none can
be inserted again after the DELETE, and the rebuild, which refolds what is left in the stream,
cannot fold the session's events back in. (Events of the session still in the stream would also
be the session's data, kept in Redis.) If trimming does not get there in time, the job fails and
rq retries it later. Dead letters are not searched: replaying one brings its events back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time

from redis.exceptions import ResponseError

from jobs.progress import report
from shared.clickhouse import ClickHouse
from shared.clickhouse_cluster import clear_table
from shared.redis_keys import stream_layout
from shared.rollup.protocol import RollupProtocol
from shared.settings import Settings
from worker.stream import id_key

_TABLES = ("abacus.events", "abacus.rollup_events")
_WAIT_FOR_TRIM_S = 60.0


def subject_hash(kind: str, subject: str) -> str:
    return hashlib.sha256(f"{kind}:{subject}".encode()).hexdigest()


class StreamNotTrimmed(Exception):
    """The stream still holds entries from before the erasure began: retried later by rq."""


def erase_statements(cluster: str = "") -> list[str]:
    """The DELETEs of one session's events (parameter ``session_id``): on a ClickHouse cluster, of
    the local tables ON CLUSTER, as the Distributed tables hold no rows to delete."""
    return [clear_table(table, cluster, "session_id = {session_id:String}") for table in _TABLES]


def _stream_start(redis_client, stream: str) -> tuple[int, int] | None:  # type: ignore[no-untyped-def]
    first = redis_client.xrange(stream, count=1)
    return id_key(first[0][0]) if first else None


def _wait_until_trimmed_past(redis_client, stream: str, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    try:
        last = id_key(redis_client.xinfo_stream(stream)["last-generated-id"])
    except ResponseError:
        return  # no stream: nothing of the session can be in it
    deadline = time.monotonic() + timeout_s
    while True:
        start = _stream_start(redis_client, stream)
        if start is None or start > last:
            return
        if time.monotonic() > deadline:
            raise StreamNotTrimmed(f"the stream still holds entries up to {last[0]}-{last[1]}; the erasure is retried")
        report(step="waiting for the stream to be stored and trimmed")
        time.sleep(0.2)


def erase_session(
    settings: Settings,
    clickhouse: ClickHouse,
    redis_client,
    session_id: str,
    requested_by: str,
    requested_at: str,
    job_id: str,  # type: ignore[no-untyped-def]
) -> dict:
    for shard in stream_layout(settings):
        _wait_until_trimmed_past(redis_client, shard.stream, _WAIT_FOR_TRIM_S)
    client = clickhouse.client()
    params = {"session_id": session_id}
    found = client.query("SELECT count() FROM abacus.events FINAL WHERE session_id = {session_id:String}", parameters=params)
    events = int(found.result_rows[0][0])
    report(step="deleting", events=events)
    for statement in erase_statements(settings.clickhouse_cluster):
        # mutations_sync: the DELETE has taken effect when the command returns.
        client.command(statement, parameters=params, settings={"mutations_sync": 2})
    report(step="rebuilding rollup", events=events)
    RollupProtocol(redis_client, stream_layout(settings), settings.consumer_group, settings.rollup_shards).request_rebuild()
    erased_at = dt.datetime.now(dt.timezone.utc)
    client.insert(
        "abacus.erasure_audit",
        [
            [
                job_id,
                "session_id",
                subject_hash("session_id", session_id),
                requested_by,
                dt.datetime.fromisoformat(requested_at),
                erased_at,
                events,
            ]
        ],
        column_names=["job_id", "subject_kind", "subject_sha256", "requested_by", "requested_at", "erased_at", "events_erased"],
    )
    return {"events_erased": events, "rollup_rebuild_requested": True}
