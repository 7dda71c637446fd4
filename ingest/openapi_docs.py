"""OpenAPI entries for the beacon endpoints.

They are raw ASGI handlers (see ``ingest/handler.py``), which Litestar leaves out of its schema,
so their operations are generated from documentation-only handlers with the same wire types and
copied into the real app's schema.
"""

from __future__ import annotations

import msgspec
from litestar import Litestar, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody

from ingest.request import ImpressionBeacon, ItemError
from shared.wire import Beacon


class BeaconAnswer(msgspec.Struct):
    ok: bool
    accepted: bool


class BatchAnswer(msgspec.Struct):
    ok: bool
    accepted: int
    rejected: int
    errors: list[ItemError] | None = None


class ErrorAnswer(msgspec.Struct):
    ok: bool
    error: str
    field: str | None


_ERRORS = {
    400: ResponseSpec(ErrorAnswer, description="Malformed JSON or a schema violation; `field` names it"),
    408: ResponseSpec(ErrorAnswer, description="Body not received within ABACUS_HTTP_BODY_TIMEOUT_MS"),
    413: ResponseSpec(None, description="Body over 64 KB (1 MB for a batch)"),
    415: ResponseSpec(None, description="Content-Type other than application/json or text/plain"),
    503: ResponseSpec(ErrorAnswer, description="Redis unavailable or registry not loaded; retry after Retry-After"),
}
_DROPPED = "202 with accepted false when dropped (bot, kill switch, unknown or disabled experiment, unknown variant); reason in X-Abacus-Reason."


def document_beacon_routes(app: Litestar) -> None:
    @post(
        "/api/experiments/event",
        status_code=202,
        tags=["ingest"],
        responses=_ERRORS,
        summary="Record one beacon",
        description=_DROPPED,
    )
    async def event(data: JSONBody[Beacon]) -> BeaconAnswer:
        raise NotImplementedError

    @post(
        "/api/experiments/impression",
        status_code=202,
        tags=["ingest"],
        responses=_ERRORS,
        summary="Record one impression",
        description=_DROPPED,
    )
    async def impression(data: JSONBody[ImpressionBeacon]) -> BeaconAnswer:
        raise NotImplementedError

    @post(
        "/api/experiments/batch",
        status_code=202,
        tags=["ingest"],
        responses=_ERRORS,
        summary="Record up to 500 beacons",
        description=_DROPPED,
    )
    async def batch(data: JSONBody[list[Beacon]]) -> BatchAnswer:
        raise NotImplementedError

    docs = Litestar([event, impression, batch], openapi_config=app.openapi_config).openapi_schema
    schema = app.openapi_schema
    schema.paths = {**(schema.paths or {}), **(docs.paths or {})}
    schema.components.schemas.update(docs.components.schemas)
