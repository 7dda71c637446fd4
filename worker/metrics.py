"""What the worker and the roller count, for /metrics (the stream's gauges are read at scrape
time by shared/stream_metrics.py)."""

from __future__ import annotations

from shared.prom import LATENCY_BUCKETS, SIZE_BUCKETS, Metrics

_BATCH_BUCKETS = (*SIZE_BUCKETS, 100000)


class WorkerMetrics:
    def __init__(self, metrics: Metrics | None = None) -> None:
        m = self.metrics = metrics or Metrics()
        self.inserted_rows = m.counter("abacus_worker_inserted_rows", "Events the worker stored in ClickHouse.")
        self.batch_rows = m.histogram("abacus_worker_batch_rows", "Events per ClickHouse insert.", _BATCH_BUCKETS)
        self.insert_seconds = m.histogram(
            "abacus_worker_insert_seconds", "Time of one ClickHouse insert that succeeded.", LATENCY_BUCKETS
        )
        self.retries = m.counter(
            "abacus_worker_insert_retries", "Inserts tried again, by why: unavailable (ClickHouse down) or rejected.", ["why"]
        )
        self.retry_unavailable = self.retries.labels("unavailable")
        self.retry_rejected = self.retries.labels("rejected")
        self.dead_letters = m.counter("abacus_worker_dead_letters", "Entries this worker moved to the dead-letter stream.")

    def stored(self, rows: int, seconds: float) -> None:
        self.inserted_rows.inc(rows)
        self.batch_rows.observe(rows)
        self.insert_seconds.observe(seconds)


class RollerMetrics:
    def __init__(self, metrics: Metrics | None = None) -> None:
        m = self.metrics = metrics or Metrics()
        self.folded_events = m.counter("abacus_rollup_folded_events", "Events the roller folded into the rollup.")
        self.step_seconds = m.histogram(
            "abacus_rollup_step_seconds", "Time of one rollup step that folded events.", LATENCY_BUCKETS
        )
        self.failures = m.counter("abacus_rollup_step_failures", "Rollup steps that failed and were retried.")
        self.shares_held = m.gauge("abacus_rollup_shares_held", "Rollup shares this process folds.")
