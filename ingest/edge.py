"""Ingest's HTTP edge, written once: a request in, ``(status, body, headers)`` out.

Every route ingest answers (the beacon endpoints, the SDK's routes and, under `abacus ingest`,
health, readiness, metrics and the OpenAPI document) is a ``Handler`` in one table. Two thin
adapters carry requests to it: ``ingest/edge_rsgi.py`` (what `abacus ingest` serves: granian's
RSGI interface, without the ~12 µs per request its ASGI layer costs) and ``ingest/edge_asgi.py``
(`abacus serve`, where the query API's Litestar app answers every path this table does not have).
The adapters do only what their interface needs: headers in, the body read, the answer sent.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec

log = logging.getLogger(__name__)

# Headers of an answer besides content-length, which each adapter adds (a 204 has none).
# Text, not bytes: RSGI, the interface `abacus ingest` serves, takes and gives headers as text.
Headers = list[tuple[str, str]]
Answer = tuple[int, bytes, Headers]
# (declared Content-Length, limit) -> the whole body, or BadRequest(413) once past the limit.
ReadBody = Callable[[int | None, int], Awaitable[bytes]]
Hook = Callable[[], Awaitable[Any]]

JSON: Headers = [("content-type", "application/json")]
# The single error shape of every Abacus service (the query API answers the same).
INTERNAL_ERROR_BODY = b'{"ok":false,"error":"internal error","field":null}'
_json = msgspec.json.Encoder()


def error_body(message: str, field: str | None = None) -> bytes:
    return _json.encode({"ok": False, "error": message, "field": field})


class Request:
    """What a handler may read: ``headers.get(lowercase name)`` gives text or None; the body is
    read only when a handler asks (``read_body``), once its headers passed."""

    __slots__ = ("method", "scheme", "path", "query", "headers", "content_type", "read_body")

    def __init__(
        self, method: str, scheme: str, path: str, query: str, headers: Any, content_type: str | None, read_body: ReadBody
    ) -> None:
        self.method = method
        self.scheme = scheme
        self.path = path
        self.query = query
        self.headers = headers
        self.content_type = content_type
        self.read_body = read_body

    def cookies(self) -> dict[str, str]:
        """The Cookie header as a dict (first value of a name wins, as browsers send the most specific first)."""
        cookies: dict[str, str] = {}
        for part in (self.headers.get("cookie") or "").split(";"):
            name, sep, value = part.partition("=")
            name = name.strip()
            if sep and name and name not in cookies:
                cookies[name] = value.strip().strip('"')
        return cookies


Handler = Callable[[Request], Awaitable[Answer]]
Methods = Mapping[str, Handler]
"""A route: its handler by method; HEAD is answered by GET's, OPTIONS by the edge."""


class IngestEdge:
    """The route table and how a request finds its handler: exact paths (a trailing slash
    tolerated, as Litestar does) and ``prefixes`` (``/sdk/`` for the versioned SDK)."""

    def __init__(
        self,
        routes: Mapping[str, Methods],
        prefixes: Mapping[str, Methods] | None = None,
        on_startup: list[Hook] | None = None,
        on_shutdown: list[Hook] | None = None,
    ) -> None:
        self._routes = dict(routes)
        self._prefixes = dict(prefixes or {})
        self._on_startup = list(on_startup or [])
        self._on_shutdown = list(on_shutdown or [])

    def route(self, path: str) -> Methods | None:
        methods = self._routes.get(path)
        if methods is not None:
            return methods
        if len(path) > 1 and path.endswith("/"):
            methods = self._routes.get(path.rstrip("/"))
            if methods is not None:
                return methods
        for prefix, methods in self._prefixes.items():
            if path.startswith(prefix) and "/" not in path[len(prefix) :]:
                return methods
        return None

    async def answer(self, request: Request) -> Answer:
        methods = self.route(request.path)
        if methods is None:
            return 404, error_body("Not found"), JSON
        method = request.method
        handler = methods.get(method) or (methods.get("GET") if method == "HEAD" else None)
        if handler is None:
            allow = [("allow", ", ".join([*methods, *(["HEAD"] if "GET" in methods else []), "OPTIONS"]))]
            if method == "OPTIONS":  # what the Allow header promises (CORS preflights never get here)
                return 204, b"", allow
            return 405, error_body(f"Method not allowed: use {' or '.join(methods)}"), JSON + allow
        try:
            status, body, headers = await handler(request)
        except Exception:
            # Handlers answer every expected failure themselves; this is a bug, logged with its traceback.
            log.exception("unhandled exception on %s %s", method, request.path)
            return 500, INTERNAL_ERROR_BODY, JSON
        if method == "HEAD":  # what GET answers, without the body (RFC 9110 9.3.2)
            return status, b"", [*headers, ("content-length", str(len(body)))]
        return status, body, headers

    async def startup(self) -> None:
        for hook in self._on_startup:
            await hook()

    async def shutdown(self) -> None:
        for hook in self._on_shutdown:
            await hook()
