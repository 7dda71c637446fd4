"""The worker loop: read a batch, store it once, acknowledge it, repeat.

Guarantees: an entry is acknowledged only after ClickHouse confirmed its rows; a retried insert
carries the same deduplication token; an entry that cannot be inserted goes to the dead-letter
stream and the rest keep flowing; a stop request finishes the batch in hand.

The three stages overlap: while the insert thread stores one batch (worker/storing.py), the loop
reads and frames the next (worker/reading.py), and the ack thread acknowledges the batch stored
before (worker/acking.py). ClickHouse stores one batch at a time, in order; at most two batches
are stored-or-storing and not yet acknowledged. Every batch is pending for a consumer of its own
until it is acknowledged, so a restart (or the recovery after a Redis error) re-forms exactly the
batches left, with their deduplication tokens, before reading on.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from redis.exceptions import RedisError

from worker.acking import Acker
from worker.metrics import WorkerMetrics
from worker.reading import Batch, BatchReader
from worker.storing import BatchStore, Sink
from worker.stream import StreamConsumer

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0
_TRIM_EVERY_S = 1.0


class Worker:
    def __init__(
        self,
        consumer: StreamConsumer,
        sink: Sink,
        batch_size: int,
        batch_wait_ms: int,
        max_deliveries: int,
        claim_idle_ms: int,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.consumer = consumer
        self.claim_idle_ms = claim_idle_ms
        self.stopping = threading.Event()
        self.reader = BatchReader(consumer, batch_size, batch_wait_ms, self.stopping)
        self.store = BatchStore(consumer, sink, max_deliveries, metrics or WorkerMetrics(), self.stopping)
        self.acker = Acker(consumer)
        self._inserter: ThreadPoolExecutor | None = None
        self._storing: Future | None = None
        self._last_trim = self._last_claim = 0.0

    @property
    def sink(self) -> Sink:
        return self.store.sink

    @property
    def inserted_rows(self) -> int:
        return self.store.inserted_rows

    def request_stop(self) -> None:
        self.stopping.set()

    def run(self, burst: bool = False) -> None:
        """Work until asked to stop (or, with ``burst``, until the stream is drained)."""
        self._inserter = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"insert-{self.consumer.consumer}")
        self.acker.start()
        try:
            self._work(burst)
            self._settle()  # the batch in hand when the stop request came
            try:
                self.reader.release_unused()
            except (RedisError, OSError) as exc:
                log.warning("could not delete the unused batch consumer (%s); the next start does", exc)
        finally:
            self._inserter.shutdown(wait=True)
            self._inserter = None
            self.acker.close()

    def _work(self, burst: bool) -> None:
        backoff = 0.5
        recovered = False
        while not self.stopping.is_set():
            try:
                if not recovered:
                    self.consumer.ensure_group()
                    self._recover()
                    recovered = True
                worked = self._step(block=not burst)
                # A burst drains stale entries too: once nothing new is left, it claims at once.
                worked = self._claim_stale(force=burst and not worked) or worked
                self._trim(force=burst and not worked)
                backoff = 0.5
                if burst and not worked:
                    return
            except (RedisError, OSError) as exc:
                # An outage may strike between insert and acknowledgement: recover the batches
                # left first when Redis is back, so each is re-inserted with the same token.
                recovered = False
                self._settle()
                log.warning("Redis unavailable (%s); retrying in %.1fs", exc, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    def _step(self, block: bool) -> bool:
        """Read the next batch while the one before is stored, then hand it to the insert thread."""
        batch = self.reader.collect(block)
        self._finish_storing()
        if batch is not None:
            assert self._inserter is not None, "batches are handed over only inside run()"
            self._storing = self._inserter.submit(self._store_and_acknowledge, batch)
        return batch is not None

    def _store_and_acknowledge(self, batch: Batch) -> None:
        if self.store.store(batch):
            self.acker.release(batch.consumer)
        # else stopping during an outage: the batch stays pending for the next start

    def _finish_storing(self) -> None:
        """Wait until the batch in flight is stored (its acknowledgement may still be on its way);
        its errors surface here."""
        storing, self._storing = self._storing, None
        if storing is not None:
            storing.result()

    def _settle(self) -> None:
        """Wait for the batches in flight before recovery reads the pending entries again. A Redis
        error they met needs nothing beyond that recovery: their entries are still pending."""
        try:
            self._finish_storing()
        except (RedisError, OSError) as exc:
            log.warning("Redis failed while storing a batch (%s); its entries stay pending", exc)
        try:
            self.acker.finish()
        except (RedisError, OSError) as exc:
            log.warning("Redis failed while acknowledging a batch (%s); its entries stay pending", exc)

    def _recover(self) -> None:
        """Finish the batches this consumer read and did not acknowledge before it last stopped."""
        for batch in self.reader.left_behind():
            self._store_and_acknowledge(batch)
        self.acker.finish()

    def _claim_stale(self, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and now - self._last_claim < max(self.claim_idle_ms / 4000, 1.0):
            return False
        self._last_claim = now
        # Our own batches in flight may have been pending long enough to be claimed: finish them first.
        self._finish_storing()
        self.acker.finish()
        batch = self.reader.claim(self.claim_idle_ms)
        if batch is not None:
            log.info("claimed %d stale entries from other consumers", len(batch.entries))
            self._store_and_acknowledge(batch)
        return batch is not None

    def _trim(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_trim >= _TRIM_EVERY_S:
            self._last_trim = now
            self.consumer.trim_acknowledged()
