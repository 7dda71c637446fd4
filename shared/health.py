"""/healthz (the process is alive) and /readyz (its dependencies answer), for every service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from litestar import Response, get

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Returns None when ready, else what is wrong."""


def health_handlers(checks: dict[str, ReadinessCheck]) -> list:
    @get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", tags=["health"])
    async def readyz() -> Response[dict[str, object]]:
        problems = {}
        for name, check in checks.items():
            try:
                problem = await check()
            except Exception as exc:  # a readiness probe reports failures; it must not raise them
                problem = f"{type(exc).__name__}: {exc}"
            if problem is not None:
                problems[name] = problem
        if problems:
            return Response({"status": "unavailable", "problems": problems}, status_code=503)
        return Response({"status": "ready", "checks": sorted(checks)}, status_code=200)

    return [healthz, readyz]
