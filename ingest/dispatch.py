"""Routes the three beacon paths to their endpoints before the Litestar app sees the request.

Litestar's router, exception middleware and scope state cost ~10 µs per request on a path
that does ~50 µs of real work; the beacon endpoints need none of it. Everything else (and every
other spelling of a beacon path, e.g. with a trailing slash) still goes through Litestar, which
routes the beacon paths to the same endpoint objects.
"""

from __future__ import annotations

import logging
from typing import Any

from ingest.handler import INTERNAL_ERROR_BODY, BeaconEndpoint, Receive, Scope, Send, respond

log = logging.getLogger(__name__)


class BeaconDispatcher:
    def __init__(self, app: Any, endpoints: dict[str, BeaconEndpoint]) -> None:
        self.app = app
        self._endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._endpoints.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        try:
            await endpoint(scope, receive, send)
        except Exception:
            # What Litestar's exception middleware does for the routes it serves: log the
            # traceback, answer the same 500.
            log.exception("unhandled exception on %s", scope["path"])
            try:
                await respond(send, 500, INTERNAL_ERROR_BODY)
            except Exception:
                # The answer had already begun (the server refuses a second start): the
                # connection is cut instead, which the client sees as a failed request.
                log.debug("could not send a 500 on %s: the response had started", scope["path"])
