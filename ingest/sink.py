"""Where the publisher's entries go: ``append(entries)`` puts them all on the stream, atomically,
or raises. Two implementations behind that one method:

- ``LeanStreamSink``: pre-encoded XADDs on one pipelined connection (``ingest/resp.py``), for
  plain TCP and TLS servers, which is every deployment Abacus documents;
- ``RedisPySink``: redis-py, for what the lean connection does not speak (unix sockets, a
  credential provider, Sentinel, a Redis Cluster).

``sink_for`` picks one from the redis-py client the rest of ingest uses, so both always reach
the same server with the same address, credentials, database, TLS settings and timeouts.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, SSLConnection

from ingest.resp import ReplyError, RespAddress, RespConnection, RespError, encode_command, open_connection
from shared.redis_conn import is_cluster
from shared.wire import ENVELOPE_FIELD

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


def sink_for(redis_client: aioredis.Redis, stream: str) -> LeanStreamSink | RedisPySink:
    if is_cluster(redis_client):
        # The cluster client follows the slot map (and its changes on a failover): the lean
        # connection talks to one server only.
        return RedisPySink(redis_client, stream)
    pool = redis_client.connection_pool
    # Built only to read its settings the way redis-py resolved them from the URL; never connected.
    probe = pool.connection_class(**pool.connection_kwargs)
    if type(probe) not in (Connection, SSLConnection) or probe.credential_provider is not None:
        return RedisPySink(redis_client, stream)
    tls = probe.ssl_context.get() if isinstance(probe, SSLConnection) else None
    address = RespAddress(
        host=probe.host,
        port=int(probe.port),
        tls=tls,
        username=probe.username,
        password=probe.password,
        db=int(probe.db or 0),
        connect_timeout=probe.socket_connect_timeout or 2.0,
        reply_timeout=probe.socket_timeout or 5.0,
    )
    return LeanStreamSink(address, stream)
