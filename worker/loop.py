"""The worker loop: read a batch, insert it once, acknowledge it, repeat.

Guarantees: an entry is acknowledged only after ClickHouse confirmed its rows; a retried insert
carries the same deduplication token; an entry that cannot be inserted goes to the dead-letter
stream and the rest keep flowing; a stop request finishes the batch in hand.

Reading, storing and acknowledging overlap: while a second thread inserts one batch, the loop
reads and frames the next (each read sent before the one in hand is framed), and a third thread
acknowledges the batch stored before. ClickHouse
inserts one batch at a time, in order; at most two batches are stored-or-storing and not yet
acknowledged. Each batch is read as a consumer of its own (``w1#batch-<run>-<n>``), so its
pending entries are exactly the batch: a restarted consumer re-forms each unacknowledged batch
from them, with the same deduplication token, and a stored batch is acknowledged by deleting its
consumer. (Entries claimed from dead consumers, and batches an earlier version left pending
under the plain name, are recorded by entry count and last id before their inserts instead.)
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from redis.exceptions import RedisError

from worker.metrics import WorkerMetrics
from worker.rows import Decoded, decode_entries, subset, undecodable
from worker.sink import ClickHouseSink, RejectedBatch, RetryableSinkError
from worker.stream import Entry, PendingRead, StreamConsumer, id_key

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0
_TRIM_EVERY_S = 1.0
# Entries per read, at most: an entry holds up to 500 events (ingest packs concurrent requests),
# so this bounds the rows one read can add beyond the batch size, and with it the memory.
_MAX_ENTRIES_PER_READ = 500


class Worker:
    def __init__(
        self,
        consumer: StreamConsumer,
        sink: ClickHouseSink,
        batch_size: int,
        batch_wait_ms: int,
        max_deliveries: int,
        claim_idle_ms: int,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.consumer = consumer
        self.metrics = metrics or WorkerMetrics()
        self.sink = sink
        self.batch_size = batch_size
        self.batch_wait_ms = batch_wait_ms
        self.max_deliveries = max_deliveries
        self.claim_idle_ms = claim_idle_ms
        self.stopping = threading.Event()
        self.inserted_rows = 0
        self._last_trim = self._last_claim = 0.0
        self._rows_per_entry = 1.0
        # Each batch is read as a consumer of its own (StreamConsumer.batch_consumer), tagged with
        # this run's nonce and a sequence number; the sequence moves on once a tag received entries.
        self._batch_nonce = secrets.token_hex(4)
        self._batch_seq = 0
        self._markers = consumer.shard.inflight_batches(consumer.consumer)
        self._legacy_marker = consumer.shard.inflight_batch(consumer.consumer)
        self._inserter: ThreadPoolExecutor | None = None
        self._in_flight: Future | None = None
        self._acker: ThreadPoolExecutor | None = None
        self._ack_in_flight: Future | None = None

    def request_stop(self) -> None:
        self.stopping.set()

    def run(self, burst: bool = False) -> None:
        """Work until asked to stop (or, with ``burst``, until the stream is drained)."""
        self._inserter = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"insert-{self.consumer.consumer}")
        self._acker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ack-{self.consumer.consumer}")
        try:
            self._work(burst)
            self._settle_in_flight()  # the batch in hand when the stop request came
            self._drop_unused_batch_consumer()
        finally:
            self._inserter.shutdown(wait=True)
            self._acker.shutdown(wait=True)
            self._inserter = self._acker = None

    def _drop_unused_batch_consumer(self) -> None:
        """The next batch's consumer exists once a read found nothing under it; going, leave it
        only if something is pending for it (a read whose reply was lost), for recovery."""
        try:
            self.consumer.release_if_empty(self._batch_consumer())
        except (RedisError, OSError) as exc:
            log.warning("could not delete the unused batch consumer (%s); the next start does", exc)

    def _work(self, burst: bool) -> None:
        backoff = 0.5
        recovered = False
        while not self.stopping.is_set():
            try:
                if not recovered:
                    self.consumer.ensure_group()
                    self._recover_own_pending()
                    recovered = True
                worked = self._step(block=not burst)
                # A burst drains stale entries too: once nothing new is left, it claims at once.
                worked = self._claim_stale(force=burst and not worked) or worked
                self._trim(force=burst and not worked)
                backoff = 0.5
                if burst and not worked:
                    return
            except (RedisError, OSError) as exc:
                # An outage may strike between insert and XACK: recover our pending entries
                # first when Redis is back, so that batch is re-inserted with the same token.
                recovered = False
                self._settle_in_flight()
                log.warning("Redis unavailable (%s); retrying in %.1fs", exc, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    # ----- one batch -----------------------------------------------------------------------
    def _step(self, block: bool) -> bool:
        batch_consumer = self._batch_consumer()
        entries, decoded = self._collect(block, batch_consumer)
        self._finish_in_flight()
        if entries:
            assert self._inserter is not None, "batches are handed over only inside run()"
            self._in_flight = self._inserter.submit(self._process, entries, decoded=decoded, batch_consumer=batch_consumer)
        return bool(entries)

    def _batch_consumer(self) -> str:
        return self.consumer.batch_consumer(f"{self._batch_nonce}-{self._batch_seq}")

    def _finish_in_flight(self) -> None:
        """Wait until the batch in flight is stored (its acknowledgement may still be on its way);
        its errors surface here."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()

    def _finish_acks(self) -> None:
        """Wait until every stored batch is acknowledged; a failed acknowledgement surfaces here."""
        ack, self._ack_in_flight = self._ack_in_flight, None
        if ack is not None:
            ack.result()

    def _settle_in_flight(self) -> None:
        """Wait for the batches in flight before recovery reads our pending entries again. A Redis
        error they met needs nothing beyond that recovery: their entries are still pending."""
        try:
            self._finish_in_flight()
        except (RedisError, OSError) as exc:
            log.warning("Redis failed while storing a batch (%s); its entries stay pending", exc)
        try:
            self._finish_acks()
        except (RedisError, OSError) as exc:
            log.warning("Redis failed while acknowledging a batch (%s); its entries stay pending", exc)

    def _read_count(self, rows_wanted: int) -> int:
        """Entries to ask for so that they hold about ``rows_wanted`` rows."""
        return max(1, min(_MAX_ENTRIES_PER_READ, int(rows_wanted / self._rows_per_entry)))

    def _collect(self, block: bool, batch_consumer: str) -> tuple[list[Entry], Decoded]:
        """Read until the entries hold ``batch_size`` rows or ``batch_wait_ms`` passed since the
        first; entries are decoded as they arrive, once, to know how many rows they hold.

        While one read's entries are framed, the next read is already on its way (sent ahead), so
        Valkey builds that reply meanwhile instead of after. A read is sent ahead only while the
        batch looks like needing it, and one sent is always collected into this batch: nothing
        read ahead is left pending past the batch (recovery and claims read pending entries)."""
        entries: list[Entry] = []
        decoded = Decoded()
        deadline = None
        ahead: PendingRead | None = None
        try:
            while decoded.size < self.batch_size and not self.stopping.is_set():
                got = []
                if ahead is not None:
                    # Cleared before collecting: a read that fails must not be collected again below.
                    sent, ahead = ahead, None
                    got = sent.entries()
                if not got:
                    if not block:
                        # A burst drains what is queued and stops: once a read comes back empty there is
                        # nothing to wait for (blocking here cost a whole batch_wait at the end of every burst).
                        wait_ms = None
                    elif deadline is None:
                        wait_ms = max(1, self.batch_wait_ms)
                    else:
                        wait_ms = int((deadline - time.monotonic()) * 1000)
                        if wait_ms <= 0:
                            break
                    got = self.consumer.read_new(self._read_count(self.batch_size - decoded.size), wait_ms, batch_consumer)
                if not got:
                    break
                if not entries:
                    self._batch_seq += 1  # this batch's consumer holds entries now: the next batch takes a new one
                entries.extend(got)
                expected = decoded.size + len(got) * self._rows_per_entry
                if expected < self.batch_size and not self.stopping.is_set():
                    ahead = self.consumer.request_new(self._read_count(self.batch_size - expected), batch_consumer)
                decode_entries(got, into=decoded)
                if deadline is None:
                    # The first entry starts the clock: at low load a beacon waits at most one batch_wait.
                    deadline = time.monotonic() + self.batch_wait_ms / 1000
            if ahead is not None:  # the batch filled up (or a stop came) sooner than expected
                sent, ahead = ahead, None
                got = sent.entries()
                entries.extend(got)
                decode_entries(got, into=decoded)
        finally:
            if ahead is not None:
                # An error on the way: what it delivered is pending, and recovery, which follows
                # every Redis error, finds it there.
                try:
                    ahead.entries()
                except (RedisError, OSError):
                    pass
        if entries:
            self._rows_per_entry = max(1.0, decoded.size / len(entries))
        return entries, decoded

    def _process(
        self, entries: list[Entry], redelivered: bool = False, decoded: Decoded | None = None, batch_consumer: str | None = None
    ) -> None:
        """Store one batch and acknowledge it. ``batch_consumer``: the batch was read as that
        consumer, whose pending entries are exactly this batch; without one (claimed entries, and
        batches an earlier version left pending) the batch is recorded before its insert instead."""
        if redelivered:
            entries = self._dead_letter_exhausted(entries, batch_consumer)
        if decoded is None:
            decoded = decode_entries(entries)
        for entry_id, fields, reason in decoded.poison:
            log.error("dead-lettering entry %s: %s", entry_id, reason)
            self._dead_letter(entry_id, fields, reason)
        self.consumer.ack(decoded.empty)
        if not decoded.ids:
            if batch_consumer is not None:
                self._release(batch_consumer)  # nothing left pending for it: only the consumer goes
            return
        raw_fields = dict(entries)
        last_id = decoded.ids[-1]
        if batch_consumer is None:
            # What recovery needs to re-form this very batch: how many entries, up to which id (the
            # next batch may already be pending behind it, read while this one was in flight).
            self.consumer.mark_in_flight(self._markers, len(decoded.ids), last_id)
        if not self._insert_isolating(decoded, raw_fields):
            return  # stopping during an outage: entries stay pending for the next start
        if batch_consumer is not None:
            self._release(batch_consumer)
        else:
            self._acknowledge(decoded.ids, last_id)

    def _acknowledge(self, ids: list[bytes], last_id: bytes) -> None:
        """Acknowledge a stored batch that was recorded before its insert, with its record."""
        self._hand_to_acker(self.consumer.ack_batch, ids, self._markers, last_id, self._legacy_marker)

    def _release(self, batch_consumer: str) -> None:
        """Acknowledge a stored batch read as its own consumer: that consumer goes, and with it
        every entry still pending for it."""
        self._hand_to_acker(self.consumer.release_batch, batch_consumer)

    def _hand_to_acker(self, acknowledge: Callable[..., object], *args: object) -> None:
        """Run an acknowledgement on the ack thread, so the next insert need not wait for it;
        first wait for the one before, so no more than two batches go unacknowledged."""
        self._finish_acks()
        if self._acker is None:  # outside run(): tests drive _process directly
            acknowledge(*args)
            return
        self._ack_in_flight = self._acker.submit(acknowledge, *args)

    def _insert_isolating(self, decoded: Decoded, raw_fields: dict) -> bool:
        """Insert everything; if ClickHouse rejects the data, bisect down to the bad entries and
        dead-letter those after ``max_deliveries`` attempts. False only when stopping mid-outage."""
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
            decoded.ids.clear()
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
        decoded.ids.clear()  # acknowledged by dead_letter; nothing left to ack for this part
        return True

    def _dead_letter(self, entry_id: bytes, fields: dict | None, reason: str) -> None:
        self.consumer.dead_letter(entry_id, fields, reason)
        self.metrics.dead_letters.inc()

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

    # ----- recovery ------------------------------------------------------------------------
    def _recover_own_pending(self) -> None:
        """Finish what this consumer had read but not acknowledged before it last stopped.

        Batches read as batch consumers are re-formed from those consumers' pending entries.
        Batches recorded before their inserts (claimed entries, or left by an earlier version)
        are re-formed next, each with its recorded size and last id. Either way they carry the
        same deduplication tokens, so a batch that reached ClickHouse is not stored twice; what
        follows the records was never inserted and is batched anew."""
        for batch_consumer, pending in self.consumer.own_batch_consumers():
            if self.stopping.is_set():
                return
            entries = self.consumer.read_pending_of(batch_consumer, max(1, pending)) if pending else []
            # The batch exactly as it was read (less what left its pending list since), so the
            # same deduplication token: a batch that reached ClickHouse is not stored twice.
            self._process(entries, redelivered=True, batch_consumer=batch_consumer)
        recorded = self.consumer.in_flight_batches(self._markers, self._legacy_marker)
        after = b"0"
        while not self.stopping.is_set():
            from_record = bool(recorded)
            count, last_id = recorded.pop(0) if recorded else (self._read_count(self.batch_size), None)
            got = self.consumer.read_own_pending(after, count)
            if not got:
                if from_record:  # nothing of ours is pending any more: the records left describe nothing
                    self._forget([last_id, *(last for _, last in recorded)])
                break
            entries = got if last_id is None else [entry for entry in got if id_key(entry[0]) <= id_key(last_id)]
            if not entries:
                # Its entries left our pending list another way (dead-lettered, claimed): only
                # the record is left, and the next record may still describe pending entries.
                self._forget([last_id])
                continue
            after = entries[-1][0]
            self._process(entries, redelivered=True)
        self._finish_acks()

    def _forget(self, last_ids: list[bytes | None]) -> None:
        self.consumer.forget_in_flight(self._markers, [i for i in last_ids if i is not None], self._legacy_marker)

    def _claim_stale(self, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and now - self._last_claim < max(self.claim_idle_ms / 4000, 1.0):
            return False
        self._last_claim = now
        # Our own batches in flight may have been pending long enough to be claimed: finish them first.
        self._finish_in_flight()
        self._finish_acks()
        entries = self.consumer.claim_stale(self.claim_idle_ms, self._read_count(self.batch_size))
        # Batch consumers of dead workers are left empty once their entries are claimed.
        self.consumer.drop_idle_batch_consumers(self.claim_idle_ms)
        if entries:
            log.info("claimed %d stale entries from other consumers", len(entries))
            self._process(entries, redelivered=True)
        return bool(entries)

    def _dead_letter_exhausted(self, entries: list[Entry], batch_consumer: str | None = None) -> list[Entry]:
        """An entry delivered too often (e.g. it crashes the worker) is parked, not retried forever."""
        counts = self.consumer.delivery_counts([entry_id for entry_id, _ in entries], batch_consumer)
        keep = []
        for entry_id, fields in entries:
            if counts.get(entry_id, 0) > self.max_deliveries:
                log.error("dead-lettering entry %s after %d deliveries", entry_id, counts[entry_id])
                self._dead_letter(entry_id, fields, f"delivered {counts[entry_id]} times")
            else:
                keep.append((entry_id, fields))
        return keep

    def _trim(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_trim >= _TRIM_EVERY_S:
            self._last_trim = now
            self.consumer.trim_acknowledged()
