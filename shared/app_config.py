"""Litestar settings shared by every app: OpenAPI (schema at /schema/openapi.json, docs page at
/schema) and logging that records every unhandled exception with its traceback."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping

from litestar.exceptions import HTTPException
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from shared.docs_page import OfflineSwaggerRenderPlugin

log = logging.getLogger(__name__)


def app_config(title: str, exception_handlers: Mapping[type[Exception], object] | None = None) -> dict[str, object]:
    """``exception_handlers`` map the app's own errors to answers; those are not logged as uncaught."""
    handlers = dict(exception_handlers or {})
    return {
        "openapi_config": OpenAPIConfig(
            title=title,
            version="1",
            path="/schema",
            render_plugins=[OfflineSwaggerRenderPlugin()],
            components=Components(security_schemes={BEARER: SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")}),
        ),
        "exception_handlers": handlers,
        "logging_config": LoggingConfig(log_exceptions="always", exception_logging_handler=_log_unexpected(tuple(handlers))),
    }


BEARER = "BearerToken"
"""The OpenAPI security scheme of the routes that need a token (Authorization: Bearer <JWT>)."""


def _log_unexpected(answered: tuple[type[Exception], ...]) -> Callable[[logging.Logger, object, list[str]], None]:
    """Litestar calls this inside its ``except``: an exception that became a 4xx (the client's
    mistake, which any client can repeat at will) or that an app handler answers deliberately is
    not an "Uncaught exception"; everything else is logged with its traceback."""

    def log_exception(logger: logging.Logger, scope: object, traceback_lines: list[str]) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, HTTPException) and exc.status_code < 500:
            return
        if isinstance(exc, answered):
            return
        path = scope.get("path") if isinstance(scope, dict) else None
        logger.error("Uncaught exception (path %s):\n%s", path, "".join(traceback_lines))

    return log_exception


def bounded_shutdown(*steps: Callable[[], Awaitable[object]], seconds: float = 10.0) -> list[Callable[[], Awaitable[None]]]:
    """Shutdown hooks that cannot hang the process: each step gets ``seconds``, then is abandoned
    with a warning (a half-closed connection must not keep a stopping service alive)."""

    def bound(step: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            try:
                await asyncio.wait_for(step(), seconds)
            except asyncio.TimeoutError:
                log.warning(
                    "shutdown step %s did not finish within %.0fs; going on", getattr(step, "__qualname__", step), seconds
                )

        return run

    return [bound(step) for step in steps]
