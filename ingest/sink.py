"""Where the publisher's entries go: ``append(entries)`` puts them all on the stream, atomically,
or raises (the ``Sink`` protocol of ``ingest/publisher.py``). Two implementations:

- ``LeanStreamSink``: pre-encoded XADDs on one pipelined connection (``ingest/resp.py``), for a
  single server named by a plain ``redis://`` or ``rediss://`` URL. Kept because it measured
  worth more than 10 % of batch ingest throughput (docs/decisions/0002-redis-client.md).
- ``RedisPySink``: redis-py, for everything else (unix sockets, URL query options, Sentinel,
  a Redis Cluster).

``sink_for`` decides from the settings' URL, which it reads itself: nothing is taken from
redis-py's connection internals, so the lean sink does not depend on redis-py's version.

With ABACUS_REDIS_WAIT_REPLICAS=n both send ``WAIT n timeout`` right after the append, in the
same write on the same connection (WAIT counts the replicas holding *this connection's* last
write, so on another connection it would confirm nothing), and raise ``ReplicasBehind`` when
fewer than n confirm: the client gets a 503 and resends with the same event ids.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import MovedError, RedisError, ResponseError

from ingest.resp import ReplyError, RespAddress, RespConnection, RespError, encode_command, open_connection
from shared.settings import Settings, SettingsError
from shared.wire import ENVELOPE_FIELD

# The timeouts shared/redis_conn.py gives every redis-py client.
_CONNECT_TIMEOUT_S = 2.0
_REPLY_TIMEOUT_S = 5.0
# redis-py's clients give up on a reply after _REPLY_TIMEOUT_S: a WAIT must answer well before.
_MAX_WAIT_MS = 4000
_MULTI = encode_command(b"MULTI")
_EXEC = encode_command(b"EXEC")


class ReplicasBehind(RespError):
    """The append is on the primary but fewer replicas than ABACUS_REDIS_WAIT_REPLICAS confirmed
    it within ABACUS_REDIS_WAIT_TIMEOUT_MS: a crash of the primary now could lose it (503)."""


def _check_wait(reply: object, wanted: int) -> None:
    if isinstance(reply, (ReplyError, ResponseError)):
        raise RespError(f"WAIT refused: {reply}")
    if not isinstance(reply, int) or reply < wanted:
        raise ReplicasBehind(f"{reply} of {wanted} replicas confirmed the append")


class RedisPySink:
    def __init__(self, redis_client: aioredis.Redis, stream: str, wait_replicas: int = 0, wait_timeout_ms: int = 0) -> None:
        self._redis = redis_client
        self._stream = stream
        self._wait = (wait_replicas, wait_timeout_ms)

    async def append(self, entries: list[bytes]) -> None:
        if self._wait[0]:
            await self._append_and_wait(entries)
            return
        if len(entries) == 1:
            await self._redis.xadd(self._stream, {ENVELOPE_FIELD: entries[0]})
            return
        pipe = self._redis.pipeline(transaction=True)
        for entry in entries:
            pipe.xadd(self._stream, {ENVELOPE_FIELD: entry})
        await pipe.execute()

    async def _append_and_wait(self, entries: list[bytes]) -> None:
        """XADD (in MULTI when several) then WAIT, written at once on one connection taken from
        redis-py: on a cluster the connection of the node owning the stream's slot."""
        xadds: list[tuple[bytes | str | int, ...]] = [(b"XADD", self._stream, b"*", ENVELOPE_FIELD, e) for e in entries]
        commands = [*xadds] if len(xadds) == 1 else [(b"MULTI",), *xadds, (b"EXEC",)]
        commands.append((b"WAIT", *self._wait))
        replies = await self._on_one_connection(commands)
        moved = next((r for r in replies if isinstance(r, MovedError)), None)
        if moved is not None and isinstance(self._redis, AsyncRedisCluster):
            # The slot has a new owner (a failover): the next append goes there.
            await self._redis.nodes_manager.move_slot(moved)
        refused = [r for r in replies[:-1] if isinstance(r, ResponseError)]
        if refused:
            raise RespError(f"append refused: {refused[0]}")
        if len(xadds) > 1 and (replies[-2] is None or any(isinstance(r, ResponseError) for r in replies[-2])):
            raise RespError(f"MULTI/EXEC failed: {replies[-2]}")
        _check_wait(replies[-1], self._wait[0])

    async def _on_one_connection(self, commands: list[tuple]) -> list:
        cluster = self._redis if isinstance(self._redis, AsyncRedisCluster) else None
        if cluster is not None:
            await cluster.initialize()  # a no-op once the slot map is known
            node = cluster.get_node_from_key(self._stream)
            connection = node.acquire_connection()
        else:
            connection = await self._redis.connection_pool.get_connection()
        try:
            await connection.send_packed_command(connection.pack_commands(commands))
            replies: list = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:  # an error reply: the connection stays in step
                    replies.append(exc)
            return replies
        except BaseException as exc:
            # Replies may be left unread (a failure, or the request cancelled): the connection must
            # not be reused out of step. After a connection failure the topology may have moved.
            await connection.disconnect()
            if cluster is not None and isinstance(exc, (RedisError, OSError)):
                await _refresh_slots(cluster)
            raise
        finally:
            if cluster is not None:
                node.release(connection)
            else:
                await self._redis.connection_pool.release(connection)

    async def close(self) -> None:
        """The redis-py client belongs to the app, which closes it."""


async def _refresh_slots(cluster: AsyncRedisCluster) -> None:
    try:
        await cluster.nodes_manager.initialize()
    except (RedisError, OSError):
        pass  # no node answers yet: this append is a 503 either way, the next one retries


class LeanStreamSink:
    def __init__(self, address: RespAddress, stream: str) -> None:
        self._address = address
        # Everything of "XADD <stream> * <field> <entry>" but the entry, encoded once.
        self._xadd_head = encode_command(b"XADD", stream, b"*", ENVELOPE_FIELD, b"")[: -len(b"$0\r\n\r\n")]
        self._connection: RespConnection | None = None
        self._wait_replicas = address.wait_replicas
        self._wait = encode_command(b"WAIT", address.wait_replicas, address.wait_timeout_ms) if address.wait_replicas else b""

    def _xadd(self, entry: bytes) -> bytes:
        return b"%s$%d\r\n%s\r\n" % (self._xadd_head, len(entry), entry)

    async def append(self, entries: list[bytes]) -> None:
        connection = await self._connected()
        waits = 1 if self._wait else 0
        if len(entries) == 1:
            replies = await connection.request(self._xadd(entries[0]) + self._wait, 1 + waits)
            if isinstance(replies[0], ReplyError):
                raise RespError(f"XADD refused: {replies[0]}")
        else:
            # MULTI ... EXEC written in one go: Redis applies all the XADDs or, if the connection
            # drops before EXEC arrives, none of them.
            payload = b"".join([_MULTI, *map(self._xadd, entries), _EXEC, self._wait])
            replies = await connection.request(payload, len(entries) + 2 + waits)
            executed = replies[len(entries) + 1]
            refused = [r for r in replies[: len(entries) + 1] if isinstance(r, ReplyError)]
            if refused or isinstance(executed, ReplyError) or executed is None:
                raise RespError(f"MULTI/EXEC refused: {refused[0] if refused else executed}")
            failed = [r for r in executed if isinstance(r, ReplyError)]
            if failed:
                raise RespError(f"XADD in MULTI failed: {failed[0]}")
        if waits:
            _check_wait(replies[-1], self._wait_replicas)

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
    """The lean sink when ``address`` (from ``lean_address``) is a lean one, else redis-py's."""
    if address is None:
        return RedisPySink(redis_client, stream)
    if not address.lean:
        return RedisPySink(redis_client, stream, address.wait_replicas, address.wait_timeout_ms)
    return LeanStreamSink(address, stream)


def lean_address(settings: Settings) -> RespAddress | None:
    """Where the lean sink connects, or, when it cannot (a cluster or Sentinel: redis-py follows
    their topology; a unix socket; a URL with query options, which only redis-py reads), None or
    with WAIT configured a not-``lean`` address carrying the WAIT settings for redis-py's sink."""
    wait_replicas, wait_ms = settings.redis_wait_replicas, settings.redis_wait_timeout_ms
    if wait_replicas and not 1 <= wait_ms <= _MAX_WAIT_MS:
        # 0 would make WAIT block for ever; beyond the bound, the clients' reply timeout cuts it short.
        raise SettingsError(f"ABACUS_REDIS_WAIT_TIMEOUT_MS={wait_ms} must be between 1 and {_MAX_WAIT_MS}")
    redis_py = RespAddress(lean=False, wait_replicas=wait_replicas, wait_timeout_ms=wait_ms) if wait_replicas else None
    if settings.redis_cluster or settings.redis_sentinel_master or not settings.redis_url:
        return redis_py
    parts = urlsplit(settings.redis_url)
    if parts.scheme not in ("redis", "rediss") or parts.query or not parts.hostname:
        return redis_py
    db = parts.path.strip("/")
    if db and not db.isdigit():
        return redis_py
    return RespAddress(
        host=parts.hostname,
        port=parts.port or 6379,
        # As redis-py's default for rediss://: the server's certificate is verified.
        tls=ssl.create_default_context() if parts.scheme == "rediss" else None,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        db=int(db or 0),
        connect_timeout=_CONNECT_TIMEOUT_S,
        # The reply to WAIT may take up to its timeout: the reply timeout must not cut it short.
        reply_timeout=_REPLY_TIMEOUT_S + (wait_ms / 1000 if wait_replicas else 0),
        wait_replicas=wait_replicas,
        wait_timeout_ms=wait_ms,
    )
