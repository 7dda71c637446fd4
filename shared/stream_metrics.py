"""The stream's state as gauges, read from Redis when /metrics is scraped (not kept up to date in
between): per stream shard (label ``shard``, "0" alone by default) its length, dead letters, and
per consumer group pending entries, undelivered entries, lag and the rollup's distance behind the
workers; then rollers running, registry generation and the last rollup verification."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from shared.redis_keys import StreamShard
from shared.rollup.protocol import last_verification
from shared.stream_status import StreamStatus, read_status

log = logging.getLogger(__name__)


class StreamCollector(Collector):
    def __init__(self, client: redis.Redis, shards: Sequence[StreamShard], worker_group: str) -> None:
        self._client, self._shards, self._worker_group = client, list(shards), worker_group

    def describe(self) -> list:
        return []  # values come from Redis at scrape time: nothing to check at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("abacus_stream_status_up", "Whether Redis answered this scrape's stream questions.")
        try:
            statuses = [(str(shard.index), read_status(self._client, shard.stream, shard.dead_letter)) for shard in self._shards]
            outcome = last_verification(self._client)
        except (RedisError, OSError) as exc:
            log.warning("metrics: could not read the stream's state: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from self._shard_gauges(statuses)
        if outcome is not None:
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
        first = statuses[0][1]  # rollers and the registry are the same whichever shard read them
        yield _gauge("abacus_rollers_running", "Roller processes with a live heartbeat.", first.rollers)
        if first.registry_generation is not None:
            yield _gauge(
                "abacus_registry_generation", "Generation of the published experiment registry.", first.registry_generation
            )

    def _shard_gauges(self, statuses: list[tuple[str, StreamStatus]]) -> Iterator[GaugeMetricFamily]:
        length = GaugeMetricFamily(
            "abacus_stream_length", "Entries in the stream shard (each holds one or more events).", labels=["shard"]
        )
        dead = GaugeMetricFamily("abacus_stream_dead_letters", "Entries in the shard's dead-letter stream.", labels=["shard"])
        pending = GaugeMetricFamily(
            "abacus_group_pending", "Entries delivered to a group and not acknowledged.", labels=["group", "shard"]
        )
        undelivered = GaugeMetricFamily(
            "abacus_group_undelivered", "Entries not yet delivered to a group.", labels=["group", "shard"]
        )
        lag = GaugeMetricFamily(
            "abacus_group_lag_seconds",
            "Age of the oldest entry a group has not finished with (pending or undelivered).",
            labels=["group", "shard"],
        )
        behind = GaugeMetricFamily(
            "abacus_rollup_behind_entries",
            "Entries the workers were delivered that a rollup share has not folded.",
            labels=["group", "shard"],
        )
        for shard, status in statuses:
            length.add_metric([shard], status.length)
            dead.add_metric([shard], status.dead_letters)
            workers = next((g for g in status.groups if g.name == self._worker_group), None)
            for group in status.groups:
                pending.add_metric([group.name, shard], group.pending)
                lag.add_metric([group.name, shard], group.lag_s)
                if group.undelivered is not None:
                    undelivered.add_metric([group.name, shard], group.undelivered)
                    if group.is_rollup and workers is not None and workers.undelivered is not None:
                        behind.add_metric([group.name, shard], max(0, group.undelivered - workers.undelivered))
        yield from (length, dead, pending, undelivered, lag, behind)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
