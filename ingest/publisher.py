"""Appends encoded envelopes to the Redis stream, coalescing concurrent requests into one pipeline.

Each request waits for its own XADD reply, so a 202 still means "in Redis"; but while one
pipeline is in flight, every request that arrives joins the next one instead of paying a round
trip of its own. At low load a pipeline holds one entry and adds no delay.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.exceptions import RedisError

ENVELOPE_FIELD = b"e"
_MAX_PIPELINE = 2000


class SinkUnavailable(Exception):
    """Redis did not confirm the append; the client should retry later (503)."""


class StreamPublisher:
    def __init__(self, redis_client: aioredis.Redis, stream: str) -> None:
        self._redis = redis_client
        self._stream = stream
        self._waiting: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flushing = False

    async def publish(self, envelope: bytes) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append((envelope, future))
        if not self._flushing:
            self._flushing = True
            loop.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:_MAX_PIPELINE]
                del self._waiting[:_MAX_PIPELINE]
                await self._append(batch)
        finally:
            self._flushing = False

    async def _append(self, batch: list[tuple[bytes, asyncio.Future[None]]]) -> None:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for envelope, _ in batch:
                pipe.xadd(self._stream, {ENVELOPE_FIELD: envelope})
            replies = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            _fail(batch, SinkUnavailable(f"Redis unavailable: {exc}"))
            return
        except BaseException as exc:
            # Cancellation or a bug: never leave a request waiting on a future nobody resolves.
            _fail(batch, SinkUnavailable(f"append interrupted: {exc!r}"))
            raise
        for (_, future), reply in zip(batch, replies):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(SinkUnavailable(f"Redis refused the append: {reply}"))
            else:
                future.set_result(None)


def _fail(batch: list[tuple[bytes, asyncio.Future[None]]], error: SinkUnavailable) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
