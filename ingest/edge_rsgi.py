"""`abacus ingest` over granian's RSGI interface: every request answered by ``ingest.edge``.

Granian's ASGI layer costs ~12 µs of GIL time per request (the scope dict, the receive and send
messages) that RSGI does not; for a beacon whose own work is ~11 µs, that layer was half of the
cost. So `abacus ingest` is an RSGI app through and through: this adapter reads RSGI's headers
and body, applies CORS (preflights included) and hands the rest to the edge's route table.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from granian.rsgi import ProtocolClosed

from ingest.edge import IngestEdge, Request
from ingest.request import BadRequest, too_large
from shared.cors import CORS
from shared.http_edge import BodyDeadlines, BodyTimeout

# Granian's RSGI headers hide a value that is not visible ASCII (get() gives None, ``in`` still
# finds the name). No such Content-Type is one we accept, so it stands in for one: a 415, as on ASGI.
_UNREADABLE = "(not visible ASCII)"
_REGISTRY_PATH = "/api/experiments"  # cached by browsers and CDNs: see CORS.varies_without_origin


class IngestRSGI:
    """The RSGI application granian serves; ``cors_origins`` as ABACUS_CORS_ORIGINS."""

    def __init__(self, edge: IngestEdge, cors_origins: tuple[str, ...], body_timeout_s: float = 10.0) -> None:
        self._edge = edge
        self._cors = CORS(_not_an_app, cors_origins)  # its rules only: this adapter answers
        self._vary_on = {path for path in (_REGISTRY_PATH,) if self._cors.varies_without_origin(path)}
        self._deadlines = BodyDeadlines(body_timeout_s)

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Granian calls this before the worker's loop runs. Raising here ends the worker process
        # before it accepts a connection; the granian main process then stops.
        loop.run_until_complete(self._edge.startup())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self._edge.shutdown())

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.proto != "http":
            protocol.close(1003)  # no websockets here
            return
        headers = scope.headers
        method = scope.method
        origin = headers.get("origin")
        if origin is not None and method == "OPTIONS" and "access-control-request-method" in headers:
            status, cors_headers = self._cors.preflight_answer(origin.encode("latin-1"))
            protocol.response_bytes(status, [(n.decode("latin-1"), v.decode("latin-1")) for n, v in cors_headers], b"")
            return
        content_type = headers.get("content-type")
        if content_type is None and "content-type" in headers:
            content_type = _UNREADABLE
        request = Request(
            method,
            scope.scheme,
            scope.path,
            scope.query_string,
            headers,
            content_type,
            partial(read_rsgi_body, protocol, self._deadlines),
        )
        status, body, extra = await self._edge.answer(request)
        if status == 204 or method == "HEAD":
            response_headers = list(extra)  # a copy: handlers share their header lists
        else:
            response_headers = [("content-length", str(len(body))), *extra]
        allowed = self._cors.response_headers(origin.encode("latin-1")) if origin is not None else None
        if allowed:
            response_headers += [(name.decode("latin-1"), value.decode("latin-1")) for name, value in allowed]
        elif self._vary_on and scope.path in self._vary_on:
            response_headers.append(("vary", "origin"))
        protocol.response_bytes(status, response_headers, body)


async def _not_an_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the RSGI edge applies CORS's rules itself")


async def read_rsgi_body(protocol: Any, deadlines: BodyDeadlines | None, declared_length: int | None, limit: int) -> bytes:
    """The body from RSGI; ``declared_length`` was checked against the limit already. A body not
    complete within the deadline is a 408: a client that stops mid-body must not hold the connection."""
    if deadlines is None:
        return await _read_rsgi_body(protocol, declared_length, limit)
    deadline = asyncio.get_running_loop().time() + deadlines.seconds
    try:
        return await deadlines.read(_read_rsgi_body(protocol, declared_length, limit), deadline)
    except BodyTimeout:
        raise BadRequest(408, "Request body not received in time") from None


_CUT_SHORT = "Client disconnected before the body was complete"


async def _read_rsgi_body(protocol: Any, declared_length: int | None, limit: int) -> bytes:
    try:
        if declared_length is not None:
            # The server reads exactly the declared length (at most the limit); a body cut short
            # raises ProtocolClosed.
            return await protocol()
        return await _read_chunked(protocol.__aiter__(), limit)
    except ProtocolClosed:
        raise BadRequest(400, _CUT_SHORT) from None


async def _read_chunked(chunks: Any, limit: int) -> bytes:
    """A chunked body, counted as it arrives so an endless one is cut at the limit.

    Granian's iterator gives an empty chunk where the body ends and also where reading it failed
    (a last chunk cut short, a malformed chunk size: hyper's error is swallowed), and only after
    the end does it stop. So an empty chunk must be followed by the stop, or the body is
    incomplete. (Chunked trailers come as an empty chunk too, so a body with trailers is refused:
    browsers cannot send request trailers.)
    """
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await chunks.__anext__()
        if not chunk:
            try:
                await chunks.__anext__()
            except StopAsyncIteration:
                return b"".join(parts)
            raise BadRequest(400, _CUT_SHORT)
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
