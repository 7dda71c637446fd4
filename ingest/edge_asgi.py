"""``ingest.edge`` as an ASGI app: `abacus serve` (in front of the query API's Litestar app, which
answers every path the edge's table does not have) and the in-process test client.

CORS and HEAD are the ASGI middlewares' (``shared.cors.CORS``, ``shared.http_edge.HeadAsGet``)
that wrap this app, as they wrap the rest of serve; body deadlines are ``BodyDeadline``'s.
"""

from __future__ import annotations

import logging
from typing import Any

from ingest.edge import IngestEdge, Request
from ingest.request import read_asgi_body

log = logging.getLogger(__name__)


class IngestASGI:
    """``fallback``: the ASGI app for every other path (and the lifespan); without one, other
    paths get the edge's 404 and the lifespan runs the edge's startup and shutdown hooks."""

    def __init__(self, edge: IngestEdge, fallback: Any = None) -> None:
        self._edge = edge
        # .app, as every ASGI wrapper in the stack names the app it wraps (tools walk them by it)
        self.app = fallback

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http" and (self.app is None or self._edge.route(scope["path"]) is not None):
            await self._http(scope, receive, send)
        elif self.app is not None:
            await self.app(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            # Repeated headers are one comma-separated list (RFC 9110 5.3), cookies one "; " list.
            seen = headers.get(name)
            headers[name] = value if seen is None else f"{seen}{'; ' if name == 'cookie' else ', '}{value}"

        async def read_body(declared_length: int | None, limit: int) -> bytes:
            return await read_asgi_body(receive, declared_length, limit)

        request = Request(
            scope["method"],
            scope["scheme"],
            scope["path"],
            scope["query_string"].decode("latin-1"),
            headers,
            headers.get("content-type"),
            read_body,
        )
        status, body, extra = await self._edge.answer(request)
        response_headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in extra]
        if status != 204 and scope["method"] != "HEAD":
            response_headers.insert(0, (b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            step = message["type"].removeprefix("lifespan.")
            try:
                await (self._edge.startup() if step == "startup" else self._edge.shutdown())
            except Exception as exc:
                log.exception("ingest %s failed", step)
                await send({"type": f"lifespan.{step}.failed", "message": repr(exc)})
                return
            await send({"type": f"lifespan.{step}.complete"})
            if step == "shutdown":
                return
