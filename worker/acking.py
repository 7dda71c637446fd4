"""Acknowledging: a stored batch's entries leave the group's pending list, on a thread of its own.

A batch is acknowledged by deleting the consumer it was read as (XGROUP DELCONSUMER drops every
entry still pending for it in one short command), and only after ClickHouse confirmed its rows.
The acknowledgement runs beside the next batch's insert; the one before is awaited first, so at
most two stored batches go unacknowledged (a crash then leaves both to recovery).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from worker.stream import StreamConsumer


class Acker:
    def __init__(self, consumer: StreamConsumer) -> None:
        self.consumer = consumer
        self._thread: ThreadPoolExecutor | None = None
        self._in_flight: Future | None = None

    def start(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ack-{self.consumer.consumer}")

    def release(self, batch_consumer: str) -> None:
        """Acknowledge the stored batch read as ``batch_consumer``, soon."""
        self.finish()
        assert self._thread is not None, "batches are acknowledged only between start() and close()"
        self._in_flight = self._thread.submit(self.consumer.release_batch, batch_consumer)

    def finish(self) -> None:
        """Wait until every stored batch is acknowledged; a failed acknowledgement surfaces here."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
