"""Reading: the entries of one batch, from the stream, each batch as a consumer of its own.

A batch is read as ``w1#batch-<run>-<n>`` (StreamConsumer.batch_consumer), so that consumer's
pending entries are exactly the batch: a restarted worker re-forms each batch it left from them,
with the same deduplication token, and a stored batch is acknowledged by deleting its consumer.
Entries claimed from dead consumers are claimed as a batch consumer too, so one recovery serves
every batch. While one read's entries are framed, the next read is already on its way.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from redis.exceptions import RedisError

from worker.rows import Decoded, decode_entries
from worker.stream import Entry, PendingRead, StreamConsumer

# Entries per read, at most: an entry holds up to 500 events (ingest packs concurrent requests),
# so this bounds the rows one read can add beyond the batch size, and with it the memory.
_MAX_ENTRIES_PER_READ = 500


@dataclass(slots=True)
class Batch:
    """Entries pending for ``consumer`` and for no one else: what is stored, then acknowledged."""

    consumer: str
    entries: list[Entry]
    decoded: Decoded | None = None
    """Framed as they were read; None for a batch delivered before (framed when it is stored)."""
    redelivered: bool = False
    """Re-formed after a stop or a crash, or claimed: delivery counts are checked before storing."""


class BatchReader:
    def __init__(self, consumer: StreamConsumer, batch_size: int, batch_wait_ms: int, stopping: threading.Event) -> None:
        self.consumer = consumer
        self.batch_size = batch_size
        self.batch_wait_ms = batch_wait_ms
        self.stopping = stopping
        self._rows_per_entry = 1.0
        # This run's nonce and a sequence number tag each batch's consumer; the sequence moves on
        # once a tag received entries.
        self._nonce = secrets.token_hex(4)
        self._seq = 0

    def next_consumer(self) -> str:
        """The consumer the next batch is read (or claimed) as."""
        return self.consumer.batch_consumer(f"{self._nonce}-{self._seq}")

    def read_count(self, rows_wanted: int) -> int:
        """Entries to ask for so that they hold about ``rows_wanted`` rows."""
        return max(1, min(_MAX_ENTRIES_PER_READ, int(rows_wanted / self._rows_per_entry)))

    def collect(self, block: bool) -> Batch | None:
        """Read until the entries hold ``batch_size`` rows or ``batch_wait_ms`` passed since the
        first; entries are framed as they arrive, once, to know how many rows they hold.

        While one read's entries are framed, the next read is already on its way (sent ahead), so
        Valkey builds that reply meanwhile instead of after. A read is sent ahead only while the
        batch looks like needing it, and one sent is always collected into this batch: nothing
        read ahead is left pending past the batch (recovery and claims read pending entries)."""
        name = self.next_consumer()
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
                    got = self.consumer.read_new(self.read_count(self.batch_size - decoded.size), wait_ms, name)
                if not got:
                    break
                if not entries:
                    self._seq += 1  # this batch's consumer holds entries now: the next batch takes a new one
                entries.extend(got)
                expected = decoded.size + len(got) * self._rows_per_entry
                if expected < self.batch_size and not self.stopping.is_set():
                    ahead = self.consumer.request_new(self.read_count(self.batch_size - expected), name)
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
        if not entries:
            return None
        self._rows_per_entry = max(1.0, decoded.size / len(entries))
        return Batch(name, entries, decoded)

    def left_behind(self) -> Iterator[Batch]:
        """The batches this consumer read and did not acknowledge before a stop, a crash or a
        Redis error, each exactly as it was read (less what left its pending list since), so
        with the same deduplication token: a batch that reached ClickHouse is not stored twice."""
        for name, pending in self.consumer.own_batch_consumers():
            if self.stopping.is_set():
                return
            entries = self.consumer.read_pending_of(name, pending) if pending else []
            yield Batch(name, entries, redelivered=True)

    def claim(self, idle_ms: int) -> Batch | None:
        """Entries that other consumers left pending for ``idle_ms``, taken over as one batch."""
        name = self.next_consumer()
        entries = self.consumer.claim_stale(idle_ms, self.read_count(self.batch_size), name)
        # Batch consumers of dead workers are left empty once their entries are claimed.
        self.consumer.drop_idle_batch_consumers(idle_ms)
        if not entries:
            return None
        self._seq += 1
        return Batch(name, entries, redelivered=True)

    def release_unused(self) -> None:
        """The next batch's consumer exists once a read found nothing under it; going, leave it
        only if something is pending for it (a read whose reply was lost), for recovery."""
        self.consumer.release_if_empty(self.next_consumer())
