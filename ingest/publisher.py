"""Appends accepted events to the Redis stream, coalescing concurrent requests into few XADDs.

Each request waits until Redis acknowledged the entry holding its events, so a 202 still means
"in Redis"; but while one append is in flight, the events of every request that arrives meanwhile
are packed into the next entry. Under load one XADD carries many requests (the Redis round trip
and the command encoding are paid once); at low load an entry holds one request and adds no delay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

import msgspec
from redis.exceptions import RedisError

from ingest.resp import RespError
from ingest.sink import ReplicasBehind
from shared.redis_keys import session_shard
from shared.wire import StreamEnvelope, StreamEvent

# Bounded entries keep a worker's read of N entries bounded in rows, and the dead-letter unit small.
MAX_EVENTS_PER_ENTRY = 500

_encoder = msgspec.msgpack.Encoder()
log = logging.getLogger(__name__)


class SinkUnavailable(Exception):
    """Redis did not confirm the append; the client should retry later (503). ``public`` is what
    the client is told; the message (with the cause) is for the log."""

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public or message


UNAVAILABLE_ANSWER = "Redis unavailable; retry later with the same event_id"
_log_every_s = 10.0
_last_logged = [0.0]


def _log_failure(exc: BaseException) -> None:
    # At most one line per interval: a Redis outage at thousands of beacons/s must not flood the log.
    now = time.monotonic()
    if now - _last_logged[0] >= _log_every_s:
        _last_logged[0] = now
        log.warning("appending to the Redis stream failed (clients get 503): %s", exc)


class Sink(Protocol):
    async def append(self, entries: list[bytes]) -> None:
        """Put every entry on the stream, atomically, or raise."""

    async def close(self) -> None: ...


# Every way a sink can fail that means "Redis did not take it": the client retries on a 503.
SINK_ERRORS = (RedisError, RespError, OSError)


AppendObserver = Callable[[float, int], None]
"""Told (seconds the append took, events it carried) after each confirmed append: the metrics."""
ShortfallObserver = Callable[[], None]
"""Told each time an append was refused because too few replicas confirmed it (WAIT): the metrics."""


class StreamPublisher:
    def __init__(
        self, sink: Sink, on_append: AppendObserver | None = None, on_replicas_behind: ShortfallObserver | None = None
    ) -> None:
        self._sink = sink
        self._on_append = on_append
        self._on_replicas_behind = on_replicas_behind
        self._events: list[StreamEvent] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._flushing = False

    async def publish(self, events: list[StreamEvent]) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._events.extend(events)
        self._waiters.append(future)
        if not self._flushing:
            self._flushing = True
            loop.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        try:
            while self._waiters:
                events, waiters = self._events, self._waiters
                self._events, self._waiters = [], []
                await self._append(events, waiters)
        finally:
            self._flushing = False

    async def _append(self, events: list[StreamEvent], waiters: list[asyncio.Future[None]]) -> None:
        try:
            entries = [
                _encoder.encode(StreamEnvelope(events=events[i : i + MAX_EVENTS_PER_ENTRY]))
                for i in range(0, len(events), MAX_EVENTS_PER_ENTRY)
            ]
            # More than one entry goes in one MULTI: a request's events all reach the stream or none do.
            started = time.perf_counter()
            await self._sink.append(entries)
            if self._on_append is not None:
                self._on_append(time.perf_counter() - started, len(events))
        except SINK_ERRORS as exc:
            if isinstance(exc, ReplicasBehind) and self._on_replicas_behind is not None:
                self._on_replicas_behind()
            _log_failure(exc)
            _resolve(waiters, SinkUnavailable(f"Redis unavailable: {exc}", UNAVAILABLE_ANSWER))
            return
        except BaseException as exc:
            # Cancellation or a bug: never leave a request waiting on a future nobody resolves.
            _resolve(waiters, SinkUnavailable(f"append interrupted: {exc!r}", UNAVAILABLE_ANSWER))
            raise
        _resolve(waiters, None)

    async def close(self) -> None:
        await self._sink.close()


class ShardedPublisher:
    """One ``StreamPublisher`` per stream shard; a request's events go to their sessions' shards.

    A request whose events span shards is answered 202 only once every shard took its part; if
    one failed, the client's retry re-sends the parts that did land with the same event ids, which
    abacus.events deduplicates (the rollup counts an event id once), so nothing is counted twice."""

    def __init__(
        self, sinks: list[Sink], on_append: AppendObserver | None = None, on_replicas_behind: ShortfallObserver | None = None
    ) -> None:
        self._shards = [StreamPublisher(sink, on_append, on_replicas_behind) for sink in sinks]

    async def publish(self, events: list[StreamEvent]) -> None:
        count = len(self._shards)
        parts: dict[int, list[StreamEvent]] = {}
        for event in events:
            parts.setdefault(session_shard(event.session_id, count), []).append(event)
        if len(parts) <= 1:
            if not parts:
                return
            ((shard, part),) = parts.items()
            await self._shards[shard].publish(part)
            return
        outcomes = await asyncio.gather(*(self._shards[s].publish(p) for s, p in parts.items()), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def close(self) -> None:
        for shard in self._shards:
            await shard.close()


def _resolve(waiters: list[asyncio.Future[None]], error: SinkUnavailable | None) -> None:
    for future in waiters:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
