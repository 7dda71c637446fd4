"""What ingest counts, for /metrics: requests by endpoint and status, accepted beacons, drops by
reason, and per XADD its latency and events.

A beacon's own work is ~11 µs, and an increment in prometheus_client's multiprocess mode (a lock
and a write to a memory-mapped file) ~1.5 µs: two of them per request cost ~4 µs (measured by
bench/bench_metrics_overhead.py). So the per-request counts go into plain ints first and are
added to the Prometheus counters by ``flush``, every ``FLUSH_EVERY_S`` from the app's event
loop (``run_flusher``), and before each scrape this process answers. A scrape may therefore lag
the truth by up to that interval, never go back. The per-XADD histograms, one observation per
many requests under load, are observed directly.
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import Counter

from ingest.steps import DropReason
from shared.prom import LATENCY_BUCKETS, SIZE_BUCKETS, Metrics

FLUSH_EVERY_S = 0.25


class IngestMetrics:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics()
        m = self.metrics
        self._requests = m.counter(
            "abacus_ingest_requests", "Beacon requests answered, by endpoint and status.", ["endpoint", "status"]
        )
        self._accepted = m.counter("abacus_ingest_accepted", "Beacons appended to the stream.")
        dropped = m.counter("abacus_ingest_dropped", "Beacons answered 202 but dropped, by reason.", ["reason"])
        self._dropped = {reason: dropped.labels(reason.value) for reason in DropReason}
        self.publish_seconds = m.histogram(
            "abacus_ingest_publish_seconds", "Time from sending an XADD to Redis confirming it.", LATENCY_BUCKETS
        )
        self.events_per_xadd = m.histogram("abacus_ingest_events_per_xadd", "Beacons carried by one XADD.", SIZE_BUCKETS)
        self.wait_refused = m.counter(
            "abacus_ingest_wait_refused",
            "Appends answered 503 because fewer replicas than ABACUS_REDIS_WAIT_REPLICAS confirmed them.",
        )
        self._by_endpoint: dict[tuple[str, int], Counter] = {}
        self._pending_requests: dict[tuple[str, int], int] = {}
        self._pending_drops: dict[DropReason, int] = {}
        self._pending_accepted = 0
        m.before_render(self.flush)

    # ----- the hot path: plain arithmetic -----------------------------------------------------
    def request(self, endpoint: str, status: int) -> None:
        key = (endpoint, status)
        self._pending_requests[key] = self._pending_requests.get(key, 0) + 1

    def accepted(self, n: int) -> None:
        self._pending_accepted += n

    def dropped(self, reason: DropReason) -> None:
        self._pending_drops[reason] = self._pending_drops.get(reason, 0) + 1

    def appended(self, seconds: float, events: int) -> None:
        self.publish_seconds.observe(seconds)
        self.events_per_xadd.observe(events)

    # ----- into the Prometheus counters -------------------------------------------------------
    def flush(self) -> None:
        # Swapped out before adding, on the loop's thread (and scrapes run there too): nothing
        # counted meanwhile is lost or added twice.
        requests, self._pending_requests = self._pending_requests, {}
        drops, self._pending_drops = self._pending_drops, {}
        accepted, self._pending_accepted = self._pending_accepted, 0
        for (endpoint, status), count in requests.items():
            child = self._by_endpoint.get((endpoint, status))
            if child is None:
                child = self._by_endpoint[(endpoint, status)] = self._requests.labels(endpoint, str(status))
            child.inc(count)
        for reason, count in drops.items():
            self._dropped[reason].inc(count)
        if accepted:
            self._accepted.inc(accepted)

    async def run_flusher(self) -> None:
        """Flush every FLUSH_EVERY_S until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(FLUSH_EVERY_S)
                self.flush()
        finally:
            self.flush()


class Flusher:
    """Starts and stops ``run_flusher`` with the app (the ingest edge's startup and shutdown hooks, or serve's Litestar ones)."""

    def __init__(self, metrics: IngestMetrics) -> None:
        self._metrics = metrics
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._metrics.run_flusher())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
