"""A small CORS layer for the whole ASGI app: beacons come from the site's pages, on other origins.

Only origins in the allow-list (or every origin with "*") get CORS headers; preflights from
other origins are refused with 403 so a misconfiguration is visible in the browser console.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


_VARIED_PATH = "/api/experiments"


def _with_vary(send: Any) -> Any:
    async def send_with_vary(message: dict) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"vary", b"origin")]
        await send(message)

    return send_with_vary


class CORS:
    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        self.app = app
        self._any = "*" in origins
        self._origins = frozenset(o.encode() for o in origins)

    def _allowed(self, origin: bytes) -> bool:
        return self._any or origin in self._origins

    def response_headers(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        """What an answer other than a preflight adds for ``origin``: nothing unless it is allowed.
        Also used by ingest's RSGI beacon path, which answers without going through this layer."""
        if origin is None or not self._allowed(origin):
            return []
        return [
            (b"access-control-allow-origin", origin),
            # Retry-After too: the browser SDK waits as long as a 503 asks before retrying.
            (b"access-control-expose-headers", b"x-abacus-reason, etag, retry-after"),
            (b"vary", b"origin"),
        ]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = preflight_method = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                preflight_method = value
        if origin is not None and scope["method"] == "OPTIONS" and preflight_method is not None:
            await self._preflight(origin, send)
            return
        cors_headers = self.response_headers(origin)
        if not cors_headers:
            if self.varies_without_origin(scope["path"]):
                await self.app(scope, receive, _with_vary(send))
            else:
                await self.app(scope, receive, send)
            return

        async def send_with_cors(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *cors_headers]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def preflight_answer(self, origin: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
        """The status and headers of a preflight from ``origin`` (also used by ingest's RSGI edge)."""
        if not self._allowed(origin):
            return 403, [(b"content-length", b"0")]
        return 204, [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
            (b"access-control-allow-headers", b"content-type, authorization, if-match, if-none-match"),
            (b"access-control-max-age", b"86400"),
            (b"vary", b"origin"),
            (b"content-length", b"0"),
        ]

    def varies_without_origin(self, path: str) -> bool:
        """Whether an answer on ``path`` without CORS headers still says ``Vary: Origin``."""
        # The public registry is cached by browsers and CDNs: an answer without CORS headers
        # must not be served to an allowed origin from cache, nor the reverse.
        # Litestar serves the route with a trailing slash too: it varies the same.
        return path.rstrip("/") == _VARIED_PATH and (self._any or bool(self._origins))

    async def _preflight(self, origin: bytes, send: Any) -> None:
        status, headers = self.preflight_answer(origin)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
