"""Litestar settings shared by every app: OpenAPI (schema at /schema/openapi.json, docs page at
/schema) and logging that records every unhandled exception with its traceback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig

from shared.docs_page import OfflineSwaggerRenderPlugin

log = logging.getLogger(__name__)


def app_config(title: str) -> dict[str, object]:
    return {
        "openapi_config": OpenAPIConfig(
            title=title, version="1", path="/schema", render_plugins=[OfflineSwaggerRenderPlugin()]
        ),
        "logging_config": LoggingConfig(log_exceptions="always", disable_stack_trace={400, 401, 403, 404, 405, 409, 412, 413, 415, 422}),
    }


def bounded_shutdown(*steps: Callable[[], Awaitable[object]], seconds: float = 10.0) -> list[Callable[[], Awaitable[None]]]:
    """Shutdown hooks that cannot hang the process: each step gets ``seconds``, then is abandoned
    with a warning (a half-closed connection must not keep a stopping service alive)."""

    def bound(step: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            try:
                await asyncio.wait_for(step(), seconds)
            except asyncio.TimeoutError:
                log.warning("shutdown step %s did not finish within %.0fs; going on", getattr(step, "__qualname__", step), seconds)

        return run

    return [bound(step) for step in steps]
