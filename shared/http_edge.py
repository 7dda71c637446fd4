"""What every Abacus HTTP server does before the app sees a request: limits on connections and on
how long a client may take, and HEAD answered like GET.

Granian (hyper underneath) holds one permit per open connection (``backpressure``); a connection
that never sends a request keeps its permit until hyper's header read timeout closes it. That
timeout covers a fresh connection only in HTTP/1 mode (in "auto" mode the protocol sniffing reads
first, without a timeout), and it is also the keep-alive idle timeout. Nothing in granian bounds how
long a request body may take, so ``BodyDeadline`` does: a body not complete in time gets a 408.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from shared.settings import Settings

log = logging.getLogger(__name__)
# Besides client connections the process holds Redis connections, chDB's files and its own.
_SPARE_FILES = 512


def granian_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for granian's ``Granian`` and embedded ``Server``."""
    from granian.constants import HTTPModes
    from granian.http import HTTP1Settings

    return {
        # HTTP/1.1 only: what browsers speak without TLS, and the mode in which hyper's header
        # timeout also closes a connection that never sends a byte.
        "http": HTTPModes.http1,
        "backlog": settings.http_backlog,
        "backpressure": settings.http_max_connections,
        "http1_settings": HTTP1Settings(header_read_timeout=settings.http_header_timeout_ms, keep_alive=settings.http_keep_alive),
    }


def allow_open_files(connections: int) -> None:
    """Raise the soft open-files limit so ``connections`` clients fit (never above the hard limit):
    a server out of file descriptors refuses everyone, not just the flood."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + _SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        if new_soft < wanted:
            log.warning("open-files limit %s is below the %s connections allowed plus spare", new_soft, connections)


class BodyTimeout(Exception):
    """A request body did not arrive within its deadline."""


class BodyDeadlines:
    """Ends body reads that outlive their deadline. One sweeper task per event loop checks them a
    few times a second, instead of a timer per request: asyncio's timers cost more than a beacon's
    own work on the hot path, and a deadline of seconds needs no finer clock."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._sweep_every_s = min(0.25, seconds / 4)
        self._reads: dict[asyncio.Task, float] = {}
        self._expired: set[asyncio.Task] = set()
        self._sweeper: asyncio.Task | None = None

    async def read(self, awaitable: Any, deadline: float) -> Any:
        """``await awaitable``, or BodyTimeout once the loop's clock passes ``deadline``."""
        task = asyncio.current_task()
        assert task is not None
        self._reads[task] = deadline
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        try:
            return await awaitable
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.discard(task)
            task.uncancel()
            raise BodyTimeout from None
        finally:
            self._reads.pop(task, None)

    async def _sweep(self) -> None:
        # Ends when nothing is being read; the next read starts it again.
        loop = asyncio.get_running_loop()
        while self._reads:
            await asyncio.sleep(self._sweep_every_s)
            now = loop.time()
            for task, deadline in list(self._reads.items()):
                # A reading task is suspended in ``read``, so the cancellation arrives there.
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()


class _BodyTimedOut(BaseException):
    """Raised into the app from ``receive``: a BaseException, so no ``except Exception`` of the app
    turns it into a 500; ``BodyDeadline`` answers it with a 408."""


_TIMEOUT_BODY = b'{"ok":false,"error":"Request body not received in time","field":null}'


class BodyDeadline:
    """A request's body must arrive within ``seconds`` of its headers, or it is answered 408 and the
    connection closed; a client that stops sending mid-body cannot hold a connection forever."""

    def __init__(self, app: Any, seconds: float) -> None:
        self.app = app
        self._deadlines = BodyDeadlines(seconds)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self._deadlines.seconds
        body_done = False
        started = False

        async def timed_receive() -> dict:
            nonlocal body_done
            if body_done:
                return await receive()  # after the body: a wait for the disconnect, not bounded
            try:
                message = await self._deadlines.read(receive(), deadline)
            except BodyTimeout:
                raise _BodyTimedOut from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, tracking_send)
        except _BodyTimedOut:
            if started:
                raise RuntimeError("request body timed out after the response had started") from None
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(_TIMEOUT_BODY)),
                (b"connection", b"close"),
            ]
            await send({"type": "http.response.start", "status": 408, "headers": headers})
            await send({"type": "http.response.body", "body": _TIMEOUT_BODY})


class HeadAsGet:
    """HEAD on a GET route answers what GET would, without the body (RFC 9110 9.3.2)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: dict) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_headers_only)


def guarded(app: Any, settings: Settings) -> Any:
    """``app`` behind the body deadline, with HEAD answered on GET routes."""
    return HeadAsGet(BodyDeadline(app, settings.http_body_timeout_ms / 1000))
