"""Where the publisher's entries go: ``append(entries)`` puts them all on the stream, atomically,
or raises (the ``Sink`` protocol of ``ingest/publisher.py``). Two implementations:

- ``LeanStreamSink``: pre-encoded XADDs on one pipelined connection (``ingest/resp.py``), for a
  single server named by a plain ``redis://`` or ``rediss://`` URL. Kept because it measured
  worth more than 10 % of batch ingest throughput (docs/decisions/0002-redis-client.md).
- ``RedisPySink``: redis-py, for everything else (unix sockets, URL query options, Sentinel,
  a Redis Cluster).

``sink_for`` decides from the settings' URL, which it reads itself: nothing is taken from
redis-py's connection internals, so the lean sink does not depend on redis-py's version.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis

from ingest.resp import ReplyError, RespAddress, RespConnection, RespError, encode_command, open_connection
from shared.settings import Settings
from shared.wire import ENVELOPE_FIELD

# The timeouts shared/redis_conn.py gives every redis-py client.
_CONNECT_TIMEOUT_S = 2.0
_REPLY_TIMEOUT_S = 5.0
_MULTI = encode_command(b"MULTI")
_EXEC = encode_command(b"EXEC")


class RedisPySink:
    def __init__(self, redis_client: aioredis.Redis, stream: str) -> None:
        self._redis = redis_client
        self._stream = stream

    async def append(self, entries: list[bytes]) -> None:
        if len(entries) == 1:
            await self._redis.xadd(self._stream, {ENVELOPE_FIELD: entries[0]})
            return
        pipe = self._redis.pipeline(transaction=True)
        for entry in entries:
            pipe.xadd(self._stream, {ENVELOPE_FIELD: entry})
        await pipe.execute()

    async def close(self) -> None:
        """The redis-py client belongs to the app, which closes it."""


class LeanStreamSink:
    def __init__(self, address: RespAddress, stream: str) -> None:
        self._address = address
        # Everything of "XADD <stream> * <field> <entry>" but the entry, encoded once.
        self._xadd_head = encode_command(b"XADD", stream, b"*", ENVELOPE_FIELD, b"")[: -len(b"$0\r\n\r\n")]
        self._connection: RespConnection | None = None

    def _xadd(self, entry: bytes) -> bytes:
        return b"%s$%d\r\n%s\r\n" % (self._xadd_head, len(entry), entry)

    async def append(self, entries: list[bytes]) -> None:
        connection = await self._connected()
        if len(entries) == 1:
            (reply,) = await connection.request(self._xadd(entries[0]), 1)
            if isinstance(reply, ReplyError):
                raise RespError(f"XADD refused: {reply}")
            return
        # MULTI ... EXEC written in one go: Redis applies all the XADDs or, if the connection
        # drops before EXEC arrives, none of them.
        payload = b"".join([_MULTI, *map(self._xadd, entries), _EXEC])
        replies = await connection.request(payload, len(entries) + 2)
        executed = replies[-1]
        refused = [r for r in replies[:-1] if isinstance(r, ReplyError)]
        if refused or isinstance(executed, ReplyError) or executed is None:
            raise RespError(f"MULTI/EXEC refused: {refused[0] if refused else executed}")
        failed = [r for r in executed if isinstance(r, ReplyError)]
        if failed:
            raise RespError(f"XADD in MULTI failed: {failed[0]}")

    async def _connected(self) -> RespConnection:
        # The publisher appends one batch at a time, so there is never a second connect racing this one.
        connection = self._connection
        if connection is None or not connection.is_open or connection.loop is not asyncio.get_running_loop():
            connection = self._connection = await open_connection(self._address)
        return connection

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def sink_for(redis_client: aioredis.Redis, stream: str, address: RespAddress | None) -> LeanStreamSink | RedisPySink:
    """The lean sink when ``address`` (from ``lean_address``) is known, else redis-py's."""
    return LeanStreamSink(address, stream) if address is not None else RedisPySink(redis_client, stream)


def lean_address(settings: Settings) -> RespAddress | None:
    """Where the lean sink connects, or None when it cannot: a cluster or Sentinel (redis-py
    follows their topology), a unix socket, or a URL with query options (only redis-py reads those)."""
    if settings.redis_cluster or settings.redis_sentinel_master or not settings.redis_url:
        return None
    parts = urlsplit(settings.redis_url)
    if parts.scheme not in ("redis", "rediss") or parts.query or not parts.hostname:
        return None
    db = parts.path.strip("/")
    if db and not db.isdigit():
        return None
    return RespAddress(
        host=parts.hostname,
        port=parts.port or 6379,
        # As redis-py's default for rediss://: the server's certificate is verified.
        tls=ssl.create_default_context() if parts.scheme == "rediss" else None,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        db=int(db or 0),
        connect_timeout=_CONNECT_TIMEOUT_S,
        reply_timeout=_REPLY_TIMEOUT_S,
    )
