"""A lean Redis connection for the one kind of command ingest sends on its hot path.

redis-py builds each command from Python objects, borrows a pooled connection and parses the reply
through several layers, which the profiles put at ~60 µs per append. Ingest sends the same XADD
again and again, so here a command is bytes encoded once, written on one connection without
waiting for earlier replies, and the replies (parsed by hiredis, in C) are handed back in the
order the commands were written: Redis answers one connection strictly in order (FIFO).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass

import hiredis


class RespError(Exception):
    """Redis refused a command, or the connection failed before its replies came."""


ReplyError = hiredis.ReplyError


def encode_command(*parts: bytes | str | int) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


@dataclass(frozen=True)
class RespAddress:
    """Where and how ingest appends. ``wait_replicas``/``wait_timeout_ms``: after each append,
    ``WAIT`` for that many replicas to hold it before a 202 (ABACUS_REDIS_WAIT_*; 0: no WAIT).
    ``lean`` False: no lean connection is possible (a cluster, Sentinel, a unix socket, URL
    options), so redis-py appends and only the WAIT fields apply."""

    host: str = ""
    port: int = 6379
    tls: ssl.SSLContext | None = None
    username: str | None = None
    password: str | None = None
    db: int = 0
    connect_timeout: float = 2.0
    reply_timeout: float = 5.0
    wait_replicas: int = 0
    wait_timeout_ms: int = 1000
    lean: bool = True


class RespConnection(asyncio.Protocol):
    """One pipelined connection: ``request`` writes a command batch and returns a future of its replies."""

    def __init__(self, reply_timeout: float) -> None:
        self._reader = hiredis.Reader()
        self._pending: deque[tuple[asyncio.Future[list], int, list]] = deque()
        self._transport: asyncio.Transport | None = None
        self._lost: Exception | None = None
        self._reply_timeout = reply_timeout
        self._timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()

    @property
    def is_open(self) -> bool:
        return self._transport is not None and self._lost is None and not self._transport.is_closing()

    def request(self, payload: bytes, replies: int) -> asyncio.Future[list]:
        """Send ``payload`` (``replies`` commands); the future resolves to their replies, in order,
        error replies included as ``ReplyError`` values. A reply that takes longer than the reply
        timeout closes the connection: a hung Redis must fail requests, not hold them."""
        if not self.is_open:
            raise RespError(f"connection lost: {self._lost}")
        future = self.loop.create_future()
        self._pending.append((future, replies, []))
        self._transport.write(payload)  # type: ignore[union-attr]
        if self._timer is None:
            self._timer = self.loop.call_later(self._reply_timeout, self._timed_out)
        return future

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # ----- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        pending = self._pending
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self._abort(RespError(f"unparseable reply from Redis: {exc}"))
                return
            if reply is False:
                break
            if not pending:
                self._abort(RespError("reply from Redis with no command waiting for it"))
                return
            future, expected, replies = pending[0]
            replies.append(reply)
            if len(replies) == expected:
                pending.popleft()
                if not future.done():
                    future.set_result(replies)
        # Replies keep coming, so Redis is alive: restart the clock for what is still pending.
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self.loop.call_later(self._reply_timeout, self._timed_out) if pending else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RespError(f"connection to Redis lost: {exc or 'closed by the server'}"))

    # ----- failure -----------------------------------------------------------------------
    def _timed_out(self) -> None:
        self._timer = None
        self._abort(RespError(f"Redis did not reply within {self._reply_timeout:g}s"))

    def _abort(self, error: RespError) -> None:
        self._fail(error)
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, error: RespError) -> None:
        if self._lost is None:
            self._lost = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            future, _, _ = self._pending.popleft()
            if not future.done():
                future.set_exception(error)


async def open_connection(address: RespAddress) -> RespConnection:
    """Connect, authenticate and select the database; RespError if any of it fails."""
    loop = asyncio.get_running_loop()
    try:
        _, connection = await asyncio.wait_for(
            loop.create_connection(
                lambda: RespConnection(address.reply_timeout),
                address.host,
                address.port,
                ssl=address.tls,
                server_hostname=address.host if address.tls is not None else None,
            ),
            address.connect_timeout,
        )
    except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
        raise RespError(f"cannot connect to Redis at {address.host}:{address.port}: {exc!r}") from None
    handshake = []
    if address.password is not None:
        credentials = (address.username, address.password) if address.username else (address.password,)
        handshake.append(encode_command(b"AUTH", *credentials))
    if address.db:
        handshake.append(encode_command(b"SELECT", address.db))
    if handshake:
        try:
            replies = await connection.request(b"".join(handshake), len(handshake))
        except RespError:
            connection.close()
            raise
        errors = [reply for reply in replies if isinstance(reply, ReplyError)]
        if errors:
            connection.close()
            raise RespError(f"Redis refused the connection set-up: {errors[0]}")
    return connection
