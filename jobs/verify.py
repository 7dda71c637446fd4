"""Nightly verification: the rollup's all-time totals against a recomputation from abacus.events.

Compared only while the rollup is current for every experiment (built, folded by a running
roller, nothing stored left unfolded): otherwise the two may differ by what is in flight, and
the job waits for it (bounded), then fails to be run again by rq. The outcome goes to the log and to Redis, from where
every process's /metrics exports it (``abacus_rollup_verification_*``, shared/stream_metrics.py).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import redis

from query_api.results_query import fetch_rollup_totals, fetch_rollups
from shared.clickhouse import ClickHouse
from shared.redis_keys import stream_layout
from shared.rollup.protocol import RollupProtocol, record_verification
from shared.settings import Settings

log = logging.getLogger(__name__)
_WAIT_FOR_CURRENT_S = 120.0


class RollupNotCurrent(Exception):
    """The rollup has events in flight: a comparison now would report them as mismatches."""


def _equal(a: object, b: object) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6)  # type: ignore[arg-type]
    return a == b


def verify_rollup(settings: Settings, clickhouse: ClickHouse, redis_client: redis.Redis) -> dict:
    client = clickhouse.client()
    keys = [row[0] for row in client.query("SELECT DISTINCT experiment_key FROM abacus.events").result_rows]
    protocol = RollupProtocol(
        redis_client, stream_layout(settings), settings.consumer_group, settings.rollup_shards, settings.rollup_max_lag_ms
    )
    deadline = time.monotonic() + _WAIT_FOR_CURRENT_S
    while keys:
        freshness = protocol.freshness(keys)
        if freshness.built and freshness.roller_running and not freshness.rebuild_requested and freshness.unfolded_events == 0:
            break
        if time.monotonic() > deadline:
            raise RollupNotCurrent(
                f"the rollup is not current ({freshness.unfolded_events} events unfolded); verification retried"
            )
        time.sleep(1.0)
    from_rollup = fetch_rollup_totals(client, keys) if keys else {}
    from_events = fetch_rollups(client, keys, None, None) if keys else {}
    mismatches = []
    for pair in sorted(set(from_rollup) | set(from_events)):
        rolled, computed = from_rollup.get(pair), from_events.get(pair)
        if rolled is None or computed is None:
            mismatches.append({"experiment_key": pair[0], "variant_key": pair[1], "field": "(missing)"})
            continue
        for field in dataclasses.fields(rolled):
            a, b = getattr(rolled, field.name), getattr(computed, field.name)
            if not _equal(a, b):
                mismatches.append(
                    {"experiment_key": pair[0], "variant_key": pair[1], "field": field.name, "rollup": a, "events": b}
                )
    outcome = {"at": time.time(), "variants_checked": len(from_events), "mismatches": len(mismatches)}
    record_verification(redis_client, outcome)
    if mismatches:
        log.error(
            "rollup verification: %d mismatches, e.g. %s; rebuild with POST /api/v1/admin/rollup/rebuild",
            len(mismatches),
            mismatches[:3],
        )
    else:
        log.info("rollup verification: %d variants agree with the events", len(from_events))
    return {**outcome, "details": mismatches[:100]}
