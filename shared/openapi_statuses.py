"""Every status an operation can answer, and the bearer scheme, in the app's OpenAPI schema.

Litestar documents a route's success and its 400 from validation; the statuses that guards, the
registry and the dependencies add are derived here from what each route is (its guards, its
parameters, its method), in one place, so a new route is documented by the same rules.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.routes import HTTPRoute

from shared.app_config import BEARER

_ERROR = Schema(
    type=OpenAPIType.OBJECT,
    properties={"status_code": Schema(type=OpenAPIType.INTEGER), "detail": Schema(type=OpenAPIType.STRING)},
    required=["status_code", "detail"],
)
_DESCRIPTIONS = {
    304: "Not modified: the If-None-Match ETag is current",
    400: "A parameter, header or body the API cannot use; `detail` (and `field` where known) name it",
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
                    responses.setdefault(str(status), _response(status))
                operation.responses = responses
                if needs_token:
                    operation.security = [{BEARER: []}]


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
    content = None if status == 304 else {"application/json": OpenAPIMediaType(schema=_ERROR)}
    return OpenAPIResponse(description=_DESCRIPTIONS[status], content=content)
