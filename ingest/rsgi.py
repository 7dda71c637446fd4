"""`abacus ingest` over granian's RSGI interface: beacon POSTs answered natively, the rest by ASGI.

Granian's ASGI layer costs ~12 µs of GIL time per request (the scope dict, the receive and send
messages) that RSGI does not; for a beacon whose own work is ~11 µs, that layer was half of the
cost. So the three exact beacon paths, with POST, skip it: the same ``BeaconEndpoint.answer`` as
the ASGI path, with RSGI's headers, body and response calls at the edges. Everything else (health,
metrics, OpenAPI, CORS preflights, 405s, other spellings of the paths) goes to the unchanged ASGI
app through ``ingest/asgi_bridge.py``, whose lifespan runs from RSGI's init and del hooks.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

from granian.rsgi import ProtocolClosed

from ingest.asgi_bridge import Lifespan, serve_http
from ingest.handler import INTERNAL_ERROR_BODY, BeaconEndpoint, Headers
from ingest.request import BadRequest, too_large
from shared.cors import CORS
from shared.http_edge import BodyDeadlines, BodyTimeout

log = logging.getLogger(__name__)

_JSON = ("content-type", "application/json")
# Granian's RSGI headers hide a value that is not visible ASCII (get() gives None, ``in`` still
# finds the name). No such Content-Type is one we accept, so it stands in for one: a 415, as on ASGI.
_UNREADABLE = "(not visible ASCII)"


class IngestRSGI:
    """The RSGI application granian serves; ``asgi_app`` is `abacus ingest`'s whole ASGI app
    (CORS outermost), ``endpoints`` the beacon endpoints by exact path."""

    def __init__(self, asgi_app: CORS, endpoints: dict[str, BeaconEndpoint], body_timeout_s: float = 10.0) -> None:
        self._asgi_app = asgi_app
        self._endpoints = endpoints
        self._deadlines = BodyDeadlines(body_timeout_s)
        self._lifespan = Lifespan(asgi_app)

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Raising here ends the worker process before it accepts a connection; the granian
        # main process then stops (it does not respawn failed workers by default).
        self._lifespan.startup(loop)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._lifespan.shutdown(loop)

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.proto != "http":
            protocol.close(1003)  # no websockets here
            return
        if scope.method == "POST":
            endpoint = self._endpoints.get(scope.path)
            if endpoint is not None:
                await self._beacon(endpoint, scope, protocol)
                return
        await serve_http(self._asgi_app, scope, protocol, self._lifespan.state)

    async def _beacon(self, endpoint: BeaconEndpoint, scope: Any, protocol: Any) -> None:
        headers = scope.headers
        content_type = headers.get("content-type")
        if content_type is None and "content-type" in headers:
            content_type = _UNREADABLE
        try:
            status, body, extra = await endpoint.answer(
                "POST",
                content_type,
                headers.get("content-length"),
                headers.get("user-agent"),
                partial(read_rsgi_body, protocol, deadlines=self._deadlines),
            )
        except Exception:
            # What the ASGI path's dispatcher (and Litestar) do: log the traceback, answer 500.
            log.exception("unhandled exception on %s", scope.path)
            status, body, extra = 500, INTERNAL_ERROR_BODY, []
        protocol.response_bytes(status, _response_headers(body, extra, self._asgi_app, headers.get("origin")), body)


def _response_headers(body: bytes, extra: Headers, cors: CORS, origin: str | None) -> Headers:
    # The same headers, in the same order, as the ASGI path: ours, then the CORS layer's.
    headers = [_JSON, ("content-length", str(len(body))), *extra]
    if origin is not None:
        allowed = cors.response_headers(origin.encode("latin-1"))
        headers += [(name.decode("latin-1"), value.decode("latin-1")) for name, value in allowed]
    return headers


async def read_rsgi_body(protocol: Any, declared_length: int | None, limit: int, deadlines: BodyDeadlines | None = None) -> bytes:
    """The body from RSGI; ``declared_length`` was checked against the limit already. A body not
    complete within the deadline is a 408: a client that stops mid-body must not hold the connection."""
    if deadlines is None:
        return await _read_rsgi_body(protocol, declared_length, limit)
    deadline = asyncio.get_running_loop().time() + deadlines.seconds
    try:
        return await deadlines.read(_read_rsgi_body(protocol, declared_length, limit), deadline)
    except BodyTimeout:
        raise BadRequest(408, "Request body not received in time") from None


async def _read_rsgi_body(protocol: Any, declared_length: int | None, limit: int) -> bytes:
    try:
        if declared_length is not None:
            # The server reads exactly the declared length: at most the limit.
            return await protocol()
        # Chunked: counted as it arrives, so an endless body is cut at the limit.
        chunks: list[bytes] = []
        size = 0
        async for chunk in protocol:
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)
    except ProtocolClosed:
        raise BadRequest(400, "Client disconnected before the body was complete") from None
