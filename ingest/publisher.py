"""Appends accepted events to the Redis stream, coalescing concurrent requests into few XADDs.

Each request waits until Redis acknowledged the entry holding its events, so a 202 still means
"in Redis"; but while one append is in flight, the events of every request that arrives meanwhile
are packed into the next entry. Under load one XADD carries many requests (the Redis round trip
and the command encoding are paid once); at low load an entry holds one request and adds no delay.
"""

from __future__ import annotations

import asyncio

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.wire import ENVELOPE_FIELD, StreamEnvelope, StreamEvent

# Bounded entries keep a worker's read of N entries bounded in rows, and the dead-letter unit small.
MAX_EVENTS_PER_ENTRY = 500

_encoder = msgspec.msgpack.Encoder()


class SinkUnavailable(Exception):
    """Redis did not confirm the append; the client should retry later (503)."""


class StreamPublisher:
    def __init__(self, redis_client: aioredis.Redis, stream: str) -> None:
        self._redis = redis_client
        self._stream = stream
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
            if len(entries) == 1:
                await self._redis.xadd(self._stream, {ENVELOPE_FIELD: entries[0]})
            else:
                # One MULTI: a request's events either all reach the stream or none do.
                pipe = self._redis.pipeline(transaction=True)
                for entry in entries:
                    pipe.xadd(self._stream, {ENVELOPE_FIELD: entry})
                await pipe.execute()
        except (RedisError, OSError) as exc:
            _resolve(waiters, SinkUnavailable(f"Redis unavailable: {exc}"))
            return
        except BaseException as exc:
            # Cancellation or a bug: never leave a request waiting on a future nobody resolves.
            _resolve(waiters, SinkUnavailable(f"append interrupted: {exc!r}"))
            raise
        _resolve(waiters, None)


def _resolve(waiters: list[asyncio.Future[None]], error: SinkUnavailable | None) -> None:
    for future in waiters:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
