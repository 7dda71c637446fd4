"""/healthz (the process can do its job) and /readyz (its dependencies answer), for every service.

Both answer in bounded time and in plain sentences: what failed, with addresses and exception
text, goes to the log, not to whoever asked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from litestar import Response, get

from shared.prom import CONTENT_TYPE, Metrics

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Returns None when ready, else what is wrong (a sentence fit for a public answer)."""
LivenessCheck = Callable[[], str | None]
"""Returns None while a part the process needs (the embedded Valkey, the worker thread) works."""
READINESS_TIMEOUT_S = 2.0


def health_handlers(checks: dict[str, ReadinessCheck], liveness: dict[str, LivenessCheck] | None = None) -> list:
    alive_checks = dict(liveness or {})

    @get("/healthz", tags=["health"])
    async def healthz() -> Response[dict[str, object]]:
        problems = {name: problem for name, check in alive_checks.items() if (problem := check()) is not None}
        if problems:
            return Response({"status": "unavailable", "problems": problems}, status_code=503, headers={"Retry-After": "1"})
        return Response({"status": "ok"}, status_code=200)

    @get("/readyz", tags=["health"])
    async def readyz() -> Response[dict[str, object]]:
        answers = await asyncio.gather(*(_bounded(name, check) for name, check in checks.items()))
        problems = {name: problem for name, problem in zip(checks, answers) if problem is not None}
        if problems:
            return Response({"status": "unavailable", "problems": problems}, status_code=503, headers={"Retry-After": "1"})
        return Response({"status": "ready", "checks": sorted(checks)}, status_code=200)

    return [healthz, readyz]


async def _bounded(name: str, check: ReadinessCheck) -> str | None:
    try:
        return await asyncio.wait_for(check(), READINESS_TIMEOUT_S)
    except asyncio.TimeoutError:
        log.warning("readiness check %s did not answer within %.0fs", name, READINESS_TIMEOUT_S)
        return f"its dependencies did not answer within {READINESS_TIMEOUT_S:g}s"
    except Exception as exc:  # a readiness probe reports failures; it must not raise them
        log.warning("readiness check %s failed: %r", name, exc)
        return "a dependency (Redis or ClickHouse) does not answer"


def metrics_handler(metrics: Metrics):  # type: ignore[no-untyped-def]
    """GET /metrics for a Litestar app: every process's values under multiprocess mode."""

    @get("/metrics", tags=["health"], sync_to_thread=False)
    def metrics_route() -> Response[bytes]:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return metrics_route
