"""`abacus ingest`'s own operational routes as ``ingest.edge`` handlers: /healthz, /readyz (in
bounded time, in plain sentences), /metrics and the static OpenAPI document. (`abacus serve`
has the Litestar versions of ``shared.health``, which check the query API and the worker too.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec

from ingest.edge import JSON, Answer, Methods, Request
from ingest.openapi import ingest_document
from shared.health import READINESS_TIMEOUT_S
from shared.prom import CONTENT_TYPE, Metrics

log = logging.getLogger(__name__)
_OK = (200, b'{"status":"ok"}', JSON)
_READY = (200, b'{"status":"ready","checks":["ingest"]}', JSON)
_RETRY_SOON = [*JSON, ("retry-after", "1")]


def ops_routes(readiness: Callable[[], Awaitable[str | None]], metrics: Metrics) -> dict[str, Methods]:
    document = msgspec.json.encode(ingest_document())  # built once: it never changes while serving

    async def healthz(request: Request) -> Answer:
        return _OK

    async def readyz(request: Request) -> Answer:
        try:
            problem = await asyncio.wait_for(readiness(), READINESS_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("readiness check ingest did not answer within %.0fs", READINESS_TIMEOUT_S)
            problem = f"its dependencies did not answer within {READINESS_TIMEOUT_S:g}s"
        except Exception as exc:  # a readiness probe reports failures; it must not raise them
            log.warning("readiness check ingest failed: %r", exc)
            problem = "a dependency (Redis) does not answer"
        if problem is None:
            return _READY
        return 503, msgspec.json.encode({"status": "unavailable", "problems": {"ingest": problem}}), _RETRY_SOON

    async def metrics_route(request: Request) -> Answer:
        return 200, metrics.render(), [("content-type", CONTENT_TYPE)]

    async def openapi(request: Request) -> Answer:
        return 200, document, JSON

    return {
        "/healthz": {"GET": healthz},
        "/readyz": {"GET": readyz},
        "/metrics": {"GET": metrics_route},
        "/schema/openapi.json": {"GET": openapi},
    }
