"""The stream's state as gauges, read from Redis when /metrics is scraped (not kept up to date in
between): length, dead letters, per consumer group pending entries, undelivered entries and lag,
the rollup's distance behind the workers, rollers running, registry generation."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from shared import redis_keys
from shared.stream_status import read_status

log = logging.getLogger(__name__)


class StreamCollector(Collector):
    def __init__(self, client: redis.Redis, stream: str, dead_letter_stream: str, worker_group: str) -> None:
        self._client, self._stream, self._dead, self._worker_group = client, stream, dead_letter_stream, worker_group

    def describe(self) -> list:
        return []  # values come from Redis at scrape time: nothing to check at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("abacus_stream_status_up", "Whether Redis answered this scrape's stream questions.")
        try:
            status = read_status(self._client, self._stream, self._dead)
        except (RedisError, OSError) as exc:
            log.warning("metrics: could not read the stream's state: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield _gauge("abacus_stream_length", "Entries in the stream (each holds one or more events).", status.length)
        yield _gauge("abacus_stream_dead_letters", "Entries in the dead-letter stream.", status.dead_letters)
        pending = GaugeMetricFamily(
            "abacus_group_pending", "Entries delivered to a group and not acknowledged.", labels=["group"]
        )
        undelivered = GaugeMetricFamily("abacus_group_undelivered", "Entries not yet delivered to a group.", labels=["group"])
        lag = GaugeMetricFamily(
            "abacus_group_lag_seconds",
            "Age of the oldest entry a group has not finished with (pending or undelivered).",
            labels=["group"],
        )
        behind = GaugeMetricFamily(
            "abacus_rollup_behind_entries",
            "Entries the workers were delivered that a rollup share has not folded.",
            labels=["group"],
        )
        workers = next((g for g in status.groups if g.name == self._worker_group), None)
        for group in status.groups:
            pending.add_metric([group.name], group.pending)
            lag.add_metric([group.name], group.lag_s)
            if group.undelivered is not None:
                undelivered.add_metric([group.name], group.undelivered)
                if group.is_rollup and workers is not None and workers.undelivered is not None:
                    behind.add_metric([group.name], max(0, group.undelivered - workers.undelivered))
        yield from (pending, undelivered, lag, behind)
        verification = self._client.get(redis_keys.ROLLUP_VERIFICATION)
        if verification is not None:
            outcome = json.loads(verification)
            yield _gauge(
                "abacus_rollup_verification_mismatches",
                "Variants x fields where the rollup differed from the events at the last verification.",
                outcome["mismatches"],
            )
            yield _gauge(
                "abacus_rollup_verification_timestamp_seconds",
                "When the last rollup verification ran (Unix time).",
                outcome["at"],
            )
        yield _gauge("abacus_rollers_running", "Roller processes with a live heartbeat.", status.rollers)
        if status.registry_generation is not None:
            yield _gauge(
                "abacus_registry_generation", "Generation of the published experiment registry.", status.registry_generation
            )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
