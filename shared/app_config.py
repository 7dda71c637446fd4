"""Litestar settings shared by every app: OpenAPI (schema at /schema/openapi.json, docs page at
/schema) and logging that records every unhandled exception with its traceback."""

from __future__ import annotations

from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin


def app_config(title: str) -> dict[str, object]:
    return {
        "openapi_config": OpenAPIConfig(
            title=title, version="1", path="/schema", render_plugins=[SwaggerRenderPlugin()]
        ),
        "logging_config": LoggingConfig(log_exceptions="always", disable_stack_trace={400, 401, 403, 404, 405, 409, 412, 413, 415}),
    }
