"""Every status an operation can answer, the bearer scheme and the examples, in the app's OpenAPI schema.

Litestar documents a route's success and its 400 from validation; the statuses that guards, the
registry and the dependencies add are derived here from what each route is (its guards, its
parameters, its method), in one place, so a new route is documented by the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Litestar
from litestar.openapi.spec import BaseSchemaObject, Example, OpenAPIMediaType, OpenAPIResponse, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.routes import HTTPRoute

from shared.app_config import BEARER

# The one error body of both services (query_api/errors.py, ingest's refusals).
ERROR_BODY = Schema(
    type=OpenAPIType.OBJECT,
    properties={
        "ok": Schema(type=OpenAPIType.BOOLEAN, const=False),
        "error": Schema(type=OpenAPIType.STRING, description="What was wrong, in a sentence"),
        "field": Schema(
            type=[OpenAPIType.STRING, OpenAPIType.NULL],
            description="The offending input: a JSON path into the body ($.variants[0].allocation) or a parameter name",
        ),
    },
    required=["ok", "error", "field"],
    examples=[{"ok": False, "error": "confidence must be between 0.5 and 0.999", "field": "confidence"}],
)
_DESCRIPTIONS = {
    304: "Not modified: the If-None-Match ETag is current",
    400: "A parameter, header or body the API cannot use; `error` says why and `field` (where known) names it",
    401: "Missing, invalid or expired bearer token (WWW-Authenticate: Bearer)",
    403: "The token's role may not do this",
    404: "No such experiment, or experiments are switched off for the site",
    408: "The request body did not arrive within ABACUS_HTTP_BODY_TIMEOUT_MS",
    409: "An experiment with this key exists (archived ones keep their key), or an export is not finished yet",
    412: "If-Match names a version that is no longer current",
    503: "Redis or ClickHouse unavailable, or the registry not loaded yet; retry after Retry-After",
}
# What one route can answer beyond the rules below: the registry's own outcomes.
_SPECIFIC = {
    ("GET", "/api/experiments"): {304},
    ("POST", "/api/admin/experiments"): {409},
    ("PUT", "/api/admin/experiments/{key}"): {412},
    ("DELETE", "/api/admin/experiments/{key}"): {412},
    ("POST", "/api/v1/admin/exports"): {404},
    ("GET", "/api/v1/admin/jobs/{job_id}/download"): {409},
}
_NEVER_UNAVAILABLE = {"/metrics", "/schema"}  # answered from memory alone
_BODY_METHODS = {"POST", "PUT", "PATCH"}


def document_statuses(app: Litestar) -> None:
    schema = app.openapi_schema
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path_format not in (schema.paths or {}):
            continue
        path_item = schema.paths[route.path_format]  # type: ignore[index]
        for handler in route.route_handlers:
            for method in handler.http_methods:
                operation = getattr(path_item, method.lower(), None)
                if operation is None:
                    continue
                statuses, needs_token = _statuses(route.path_format, method, handler)
                responses = operation.responses if operation.responses is not None else {}
                for status in sorted(statuses):
                    # Replaces Litestar's own 400 too: its schema is Litestar's default error body,
                    # which the exception handlers never answer.
                    responses[str(status)] = _response(status)
                _add_example(responses, handler)
                operation.responses = responses
                if needs_token:
                    operation.security = [{BEARER: []}]


@dataclass
class _Verbatim(BaseSchemaObject):
    """An example value rendered as it is: Litestar's rendering drops every None in a spec object,
    which would take the null fields (required ones too) out of an example answer."""

    value: Any

    def to_schema(self) -> Any:  # type: ignore[override]
        return self.value


def _add_example(responses: dict, handler: object) -> None:
    """The success answer's example, from the callable a route names as ``opt["openapi_example"]``
    (computed now, when the schema is built, never at import)."""
    build = (getattr(handler, "opt", None) or {}).get("openapi_example")
    success = responses.get("200")
    if build is None or success is None or not success.content or "application/json" not in success.content:
        return
    media = success.content["application/json"]
    media.examples = {"typical": Example(summary="A typical answer", value=_Verbatim(build()))}


def _statuses(path: str, method: str, handler: object) -> tuple[set[int], bool]:
    guard_names = {getattr(guard, "__name__", "") for guard in getattr(handler, "guards", None) or []}
    needs_token = any(name.startswith("requires_") and name != "requires_experiments_enabled" for name in guard_names)
    statuses = set(_SPECIFIC.get((method, path), set()))
    if needs_token:
        statuses |= {401, 403}
    params = set(handler.parsed_fn_signature.parameters) if hasattr(handler, "parsed_fn_signature") else set()
    if "requires_experiments_enabled" in guard_names or "{" in path or "experiment_key" in params:
        statuses.add(404)
    if params - {"request", "data"} or "data" in params:
        statuses.add(400)
    if method in _BODY_METHODS:
        statuses.add(408)
    if not any(path == p or path.startswith(p + "/") for p in _NEVER_UNAVAILABLE):
        statuses.add(503)
    return statuses, needs_token


def _response(status: int) -> OpenAPIResponse:
    content = None if status == 304 else {"application/json": OpenAPIMediaType(schema=ERROR_BODY)}
    return OpenAPIResponse(description=_DESCRIPTIONS[status], content=content)
