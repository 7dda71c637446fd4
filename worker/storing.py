"""Storing: one batch into ClickHouse, once, with the dead-letter policy.

A retried insert carries the same deduplication token (the sink derives it from the entry ids).
ClickHouse unavailable: back off and retry the same rows until it is back (or a stop comes).
ClickHouse refusing the data: bisect down to the entries it refuses; an entry that does not
decode is poison and parked at once, one that does is retried ``max_deliveries`` times first.
An entry delivered more than ``max_deliveries`` times (it crashes the worker) is parked unread.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from worker.metrics import WorkerMetrics
from worker.reading import Batch
from worker.rows import Decoded, decode_entries, subset, undecodable
from worker.sink import RejectedBatch, RetryableSinkError
from worker.stream import Entry, StreamConsumer

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0


class Sink(Protocol):
    def insert(self, decoded: Decoded) -> None: ...


class BatchStore:
    def __init__(
        self, consumer: StreamConsumer, sink: Sink, max_deliveries: int, metrics: WorkerMetrics, stopping: threading.Event
    ) -> None:
        self.consumer = consumer
        self.sink = sink
        self.max_deliveries = max_deliveries
        self.metrics = metrics
        self.stopping = stopping
        self.inserted_rows = 0

    def store(self, batch: Batch) -> bool:
        """Store what can be stored of ``batch`` and park the rest; then the batch may be
        acknowledged. False only when stopping while ClickHouse is unavailable: its entries stay
        pending for the next start."""
        entries = self._dead_letter_exhausted(batch) if batch.redelivered else batch.entries
        decoded = batch.decoded if batch.decoded is not None else decode_entries(entries)
        for entry_id, fields, reason in decoded.poison:
            log.error("dead-lettering entry %s: %s", entry_id, reason)
            self._dead_letter(entry_id, fields, reason)
        self.consumer.ack(decoded.empty)
        if not decoded.ids:
            return True
        return self._insert_isolating(decoded, dict(entries))

    def _insert_isolating(self, decoded: Decoded, raw_fields: dict) -> bool:
        """Insert everything; if ClickHouse rejects the data, bisect down to the bad entries."""
        try:
            return self._insert_with_retry(decoded)
        except RejectedBatch as exc:
            if len(decoded.ids) == 1:
                return self._park_or_retry_lone_entry(decoded, raw_fields, str(exc))
        middle = len(decoded.ids) // 2
        first = self._insert_isolating(subset(decoded, 0, middle), raw_fields)
        second = self._insert_isolating(subset(decoded, middle, len(decoded.ids)), raw_fields)
        return first and second

    def _park_or_retry_lone_entry(self, decoded: Decoded, raw_fields: dict, error: str) -> bool:
        entry_id = decoded.ids[0]
        # Entries are framed, not decoded, on the way in: one that does not decode either is
        # poison, parked at once; one that does may have met a passing refusal, and is retried.
        why = undecodable(raw_fields.get(entry_id))
        if why is not None:
            log.error("dead-lettering entry %s: %s", entry_id, why)
            self._dead_letter(entry_id, raw_fields.get(entry_id), why)
            return True
        for attempt in range(2, self.max_deliveries + 1):
            self.stopping.wait(0.1 * attempt)
            self.metrics.retry_rejected.inc()
            try:
                return self._insert_with_retry(decoded)
            except RejectedBatch as exc:
                error = str(exc)
        log.error("dead-lettering entry %s after %d attempts: %s", entry_id, self.max_deliveries, error)
        self._dead_letter(entry_id, raw_fields.get(entry_id), f"insert rejected: {error}")
        return True

    def _insert_with_retry(self, decoded: Decoded) -> bool:
        backoff = 0.5
        while True:
            try:
                started = time.perf_counter()
                self.sink.insert(decoded)
                self.metrics.stored(decoded.row_count, time.perf_counter() - started)
                self.inserted_rows += decoded.row_count
                return True
            except RetryableSinkError as exc:
                self.metrics.retry_unavailable.inc()
                if self.stopping.is_set():
                    log.warning("stopping while ClickHouse is unavailable; batch left pending")
                    return False
                log.warning("ClickHouse unavailable (%s); retrying in %.1fs", exc, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    def _dead_letter_exhausted(self, batch: Batch) -> list[Entry]:
        """An entry delivered too often (e.g. it crashes the worker) is parked, not retried forever."""
        counts = self.consumer.delivery_counts([entry_id for entry_id, _ in batch.entries], batch.consumer)
        keep = []
        for entry_id, fields in batch.entries:
            if counts.get(entry_id, 0) > self.max_deliveries:
                log.error("dead-lettering entry %s after %d deliveries", entry_id, counts[entry_id])
                self._dead_letter(entry_id, fields, f"delivered {counts[entry_id]} times")
            else:
                keep.append((entry_id, fields))
        return keep

    def _dead_letter(self, entry_id: bytes, fields: dict | None, reason: str) -> None:
        self.consumer.dead_letter(entry_id, fields, reason)
        self.metrics.dead_letters.inc()
