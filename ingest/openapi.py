"""The OpenAPI description of ingest's routes, as a static document built from the wire structs.

The routes are ``ingest.edge`` handlers, which no framework inspects, so their operations are
written here once: request and answer bodies are ``msgspec.json.schema_components`` of the
structs the handlers decode and encode. `abacus ingest` serves the whole document natively at
/schema/openapi.json; `abacus serve` merges its paths into the query API's Litestar schema.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ingest.handler import BatchResult
from ingest.request import BATCH_BODY_LIMIT, SINGLE_BODY_LIMIT, ImpressionBeacon
from ingest.sdk_routes import SDK_PATH, VisitorCookieRequest
from shared.wire import MAX_BATCH_ITEMS, Beacon

_REF = "#/components/schemas/{name}"


class BeaconAnswer(msgspec.Struct):
    ok: bool
    accepted: bool


class ErrorAnswer(msgspec.Struct):
    ok: bool
    error: str
    field: str | None


def _ref(struct: type) -> dict[str, str]:
    return {"$ref": _REF.format(name=struct.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref(ErrorAnswer), description)


_UNAVAILABLE = _error("Redis unavailable or the registry not loaded yet; retry after Retry-After")
_INTERNAL = _error("A bug: the same error shape, logged with its traceback")
_BODY_ERRORS = {
    "400": _error("Malformed JSON or a schema violation; `field` names it"),
    "408": _error("Body not received within ABACUS_HTTP_BODY_TIMEOUT_MS"),
    "413": _error("Body over the limit"),
    "415": _error("Content-Type other than application/json or text/plain"),
}
_DROPPED = (
    "202 with accepted false when dropped (bot, kill switch, unknown or disabled experiment, "
    "unknown variant); reason in X-Abacus-Reason. A client retrying after a 503 resends the same event_id."
)


def _beacon_operation(summary: str, body: dict[str, Any], answer: type, limit: int) -> dict[str, Any]:
    return {
        "post": {
            "tags": ["ingest"],
            "summary": summary,
            "description": f"{_DROPPED} Body limit {limit} bytes.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}, "text/plain": {"schema": body}}},
            "responses": {
                "202": _json(_ref(answer), "Taken (see `accepted`)"),
                **_BODY_ERRORS,
                "500": _INTERNAL,
                "503": _UNAVAILABLE,
            },
        }
    }


def _get(tag: str, summary: str, responses: dict[str, Any], parameters: list | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {"tags": [tag], "summary": summary, "responses": {**responses, "500": _INTERNAL}}
    if parameters:
        operation["parameters"] = parameters
    return {"get": operation}


def _query(name: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": True, "schema": {"type": "string"}}


_SCRIPT = {"description": "The script", "content": {"text/javascript": {"schema": {"type": "string"}}}}
_NOT_MODIFIED = {"description": "Not modified: the If-None-Match ETag is current"}


def beacon_and_sdk_paths(*, public_registry: bool) -> dict[str, Any]:
    """The path items of ingest's routes; ``public_registry`` adds GET /api/experiments."""
    paths: dict[str, Any] = {
        "/api/experiments/event": _beacon_operation("Record one beacon", _ref(Beacon), BeaconAnswer, SINGLE_BODY_LIMIT),
        "/api/experiments/impression": _beacon_operation(
            "Record one impression", _ref(ImpressionBeacon), BeaconAnswer, SINGLE_BODY_LIMIT
        ),
        "/api/experiments/batch": _beacon_operation(
            f"Record up to {MAX_BATCH_ITEMS} beacons; invalid items are reported, valid ones taken",
            {"type": "array", "items": _ref(Beacon)},
            BatchResult,
            BATCH_BODY_LIMIT,
        ),
        SDK_PATH: _get(
            "sdk", "The browser SDK (short-lived cache; Link names the versioned URL)", {"200": _SCRIPT, "304": _NOT_MODIFIED}
        ),
        "/sdk/{name}": _get(
            "sdk",
            "The browser SDK at its versioned URL (cached for a year)",
            {"200": _SCRIPT, "304": _NOT_MODIFIED, "404": _error("No SDK has that version")},
            [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        ),
        "/api/experiments/assignments": _get(
            "sdk",
            "Server-side assignment: {experiment_key: variant_key}",
            {
                "200": _json({"type": "object", "additionalProperties": {"type": "string"}}, "The assignments"),
                "400": _error("A query parameter is missing or invalid; `field` names it"),
                "503": _UNAVAILABLE,
            },
            [_query("visitor_id"), _query("path")],
        ),
        "/api/experiments/visitor": {
            "post": {
                "tags": ["sdk"],
                "summary": "Sets the visitor cookie from the server (Safari keeps it 400 days)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(VisitorCookieRequest)}}},
                "responses": {"204": {"description": "Cookie set (Set-Cookie)"}, **_BODY_ERRORS, "500": _INTERNAL},
            }
        },
    }
    if public_registry:
        paths["/api/experiments"] = _get(
            "public",
            "Experiment registry for pages",
            {
                "200": _json({"type": "array", "items": {"type": "object"}}, "Active experiments"),
                "304": _NOT_MODIFIED,
                "503": _UNAVAILABLE,
            },
        )
    return paths


def components() -> dict[str, Any]:
    """The schemas the path items refer to."""
    _, schemas = msgspec.json.schema_components(
        [Beacon, ImpressionBeacon, BeaconAnswer, BatchResult, ErrorAnswer, VisitorCookieRequest], ref_template=_REF
    )
    return schemas


_HEALTH = {
    "/healthz": _get("health", "The process can do its job", {"200": _json({"type": "object"}, "ok")}),
    "/readyz": _get(
        "health", "Redis answers and the registry is loaded", {"200": _json({"type": "object"}, "ready"), "503": _UNAVAILABLE}
    ),
    "/metrics": _get("health", "Prometheus metrics", {"200": {"description": "Text exposition format"}}),
}


def ingest_document() -> dict[str, Any]:
    """The whole OpenAPI document of `abacus ingest`."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Abacus ingest", "version": "1"},
        "paths": {**beacon_and_sdk_paths(public_registry=True), **_HEALTH},
        "components": {"schemas": components()},
    }


def document_into(app: Any) -> None:
    """Adds ingest's routes (without the public registry, which the query API serves) to a
    Litestar app's schema; Litestar renders plain dicts among its spec objects as they are."""
    schema = app.openapi_schema
    schema.paths = {**(schema.paths or {}), **beacon_and_sdk_paths(public_registry=False)}
    schema.components.schemas.update(components())
