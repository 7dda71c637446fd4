"""What ingest counts, for /metrics: requests by endpoint and status, accepted beacons, drops by
reason, and per XADD its latency and events. Children are bound once per label value, so the
hot path does a dict lookup and an increment, never a label resolution."""

from __future__ import annotations

from prometheus_client import Counter

from ingest.steps import DropReason
from shared.prom import LATENCY_BUCKETS, SIZE_BUCKETS, Metrics


class IngestMetrics:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics()
        m = self.metrics
        self._requests = m.counter(
            "abacus_ingest_requests", "Beacon requests answered, by endpoint and status.", ["endpoint", "status"]
        )
        self.accepted = m.counter("abacus_ingest_accepted", "Beacons appended to the stream.")
        dropped = m.counter("abacus_ingest_dropped", "Beacons answered 202 but dropped, by reason.", ["reason"])
        self.dropped = {reason: dropped.labels(reason.value) for reason in DropReason}
        self.publish_seconds = m.histogram(
            "abacus_ingest_publish_seconds", "Time from sending an XADD to Redis confirming it.", LATENCY_BUCKETS
        )
        self.events_per_xadd = m.histogram("abacus_ingest_events_per_xadd", "Beacons carried by one XADD.", SIZE_BUCKETS)
        self._by_endpoint: dict[tuple[str, int], Counter] = {}

    def request(self, endpoint: str, status: int) -> None:
        child = self._by_endpoint.get((endpoint, status))
        if child is None:
            child = self._by_endpoint[(endpoint, status)] = self._requests.labels(endpoint, str(status))
        child.inc()

    def appended(self, seconds: float, events: int) -> None:
        self.publish_seconds.observe(seconds)
        self.events_per_xadd.observe(events)
