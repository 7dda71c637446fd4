"""Serves an ASGI app from inside an RSGI app: one HTTP request at a time, and the app's lifespan.

`abacus ingest` answers the beacon paths natively over RSGI (``ingest/rsgi.py``) and hands
everything else (health, metrics, OpenAPI, preflights, 405s) to the unchanged ASGI app. Those
requests are rare and small, so the whole response is collected and sent in one piece.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any
from urllib.parse import quote

from granian.rsgi import ProtocolClosed

log = logging.getLogger(__name__)

_ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
_DISCONNECT = {"type": "http.disconnect"}
_BODY_END = {"type": "http.request", "body": b"", "more_body": False}
# RSGI's path is already percent-decoded; quoting it again with these left alone gives back the
# request's bytes except where the client escaped a character that needs none (such as %2F).
_PATH_SAFE = "/!$&'()*+,;=:@-._~"


class LifespanFailed(RuntimeError):
    """The ASGI app refused to start (or crashed starting); the worker must not serve."""


def _address(text: str) -> tuple[str, int] | None:
    # RSGI gives "host:port", IPv6 hosts in brackets; ASGI wants (host, port).
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def http_scope(rsgi_scope: Any, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": _ASGI_VERSION,
        "http_version": rsgi_scope.http_version,
        "method": rsgi_scope.method,
        "scheme": rsgi_scope.scheme,
        "path": rsgi_scope.path,
        "raw_path": quote(rsgi_scope.path, safe=_PATH_SAFE).encode("ascii"),
        # RSGI decoded the query as UTF-8; encoding it back gives the bytes the client sent.
        "query_string": rsgi_scope.query_string.encode("utf-8"),
        "root_path": "",
        "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in rsgi_scope.headers.items()],
        "client": _address(rsgi_scope.client),
        "server": _address(rsgi_scope.server),
        "state": state.copy(),
    }


class _Exchange:
    """receive() and send() for one request: the body streams in, the response is collected."""

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        self._chunks: Any = None
        self._body_done = False
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.complete = False
        self.disconnected = False

    async def receive(self) -> dict[str, Any]:
        if self._body_done:
            if not self.complete:
                # ASGI: a receive() after the body waits until the client goes away, unless the
                # response was sent already.
                await self._protocol.client_disconnect()
                self.disconnected = True
            return _DISCONNECT
        if self._chunks is None:
            self._chunks = self._protocol.__aiter__()
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._body_done = True
            return _BODY_END
        except ProtocolClosed:
            # The client left mid-body: in ASGI terms a disconnect, not an error of the app.
            self._body_done = self.disconnected = True
            return _DISCONNECT
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(self, message: dict[str, Any]) -> None:
        if self.disconnected:
            return  # nobody to answer; ASGI lets a server drop what is sent after a disconnect
        kind = message["type"]
        if kind == "http.response.start":
            if self.status is not None:
                raise RuntimeError("http.response.start sent twice")
            self.status = message["status"]
            self.headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in message.get("headers", ())]
        elif kind == "http.response.body":
            if self.status is None or self.complete:
                raise RuntimeError("http.response.body sent before the start or after the end")
            self.body.append(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
                self._protocol.response_bytes(self.status, self.headers, b"".join(self.body))
        else:
            raise RuntimeError(f"unsupported ASGI message {kind!r}")


async def serve_http(app: Any, rsgi_scope: Any, protocol: Any, state: dict[str, Any]) -> None:
    """One RSGI HTTP request answered by the ASGI ``app``; a 500 if it ends without an answer."""
    exchange = _Exchange(protocol)
    try:
        await app(http_scope(rsgi_scope, state), exchange.receive, exchange.send)
    except Exception:
        log.exception("unhandled exception on %s", rsgi_scope.path)
    if not exchange.complete and not exchange.disconnected:
        # Nothing (or half a response) was sent: what an ASGI server answers then.
        protocol.response_bytes(500, [("content-type", "text/plain; charset=utf-8")], b"Internal Server Error")


class Lifespan:
    """Runs the ASGI app's lifespan on the worker's loop, from RSGI's synchronous init and del hooks.

    Granian calls ``__rsgi_init__(loop)`` before the loop runs and ``__rsgi_del__(loop)`` after it
    stopped, so both drive the loop themselves, as granian does for its own ASGI lifespan.
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self.state: dict[str, Any] = {}
        self._to_app: asyncio.Queue[dict[str, Any]] | None = None
        self._from_app: asyncio.Queue[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None

    def startup(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self._startup())

    def shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._task is not None and not self._task.done():
            loop.run_until_complete(self._shutdown())

    async def _startup(self) -> None:
        self._to_app, self._from_app = asyncio.Queue(), asyncio.Queue()
        scope = {"type": "lifespan", "asgi": _ASGI_VERSION, "state": self.state}
        self._task = asyncio.get_running_loop().create_task(self._run(scope))
        await self._to_app.put({"type": "lifespan.startup"})
        reply = await self._from_app.get()
        if reply["type"] != "lifespan.startup.complete":
            raise LifespanFailed(f"ASGI lifespan startup failed: {reply.get('message') or reply['type']}")

    async def _shutdown(self) -> None:
        assert self._to_app is not None and self._from_app is not None and self._task is not None
        await self._to_app.put({"type": "lifespan.shutdown"})
        reply = await self._from_app.get()
        await self._task
        if reply["type"] != "lifespan.shutdown.complete":
            log.error("ASGI lifespan shutdown failed: %s", reply.get("message") or reply["type"])

    async def _run(self, scope: dict[str, Any]) -> None:
        assert self._to_app is not None and self._from_app is not None
        try:
            await self._app(scope, self._to_app.get, self._from_app.put)
        except Exception:
            # An app that raises instead of (or after) sending ".failed" still fails its startup or
            # shutdown, with the traceback as the message: the waiting side must not wait forever.
            await self._from_app.put({"type": "lifespan.failed", "message": traceback.format_exc()})
