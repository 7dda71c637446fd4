"""Admin view of the results rollup: is it live, how far has it folded, and a rebuild on request
(after deleting or correcting rows of abacus.events by hand, say)."""

from __future__ import annotations

from litestar import Request, get, post
from litestar.exceptions import ServiceUnavailableException
from litestar.status_codes import HTTP_202_ACCEPTED
from redis.exceptions import RedisError

from query_api.auth import requires_admin
from query_api.service import QueryService, in_thread
from shared import redis_keys


def rollup_status(service: QueryService) -> dict[str, object]:
    try:
        built, alive, behind_ms, rebuild_requested = service.rollup_state()
    except RedisError as exc:
        raise ServiceUnavailableException(f"Redis unavailable: {exc}", headers={"Retry-After": "1"}) from exc
    return {
        "live": service.live(built, alive, behind_ms),
        "built": built,
        "roller_running": alive,
        "behind_ms": behind_ms,
        "max_lag_ms": service.rollup_max_lag_ms,
        "rebuild_requested": rebuild_requested,
    }


@get("/api/v1/admin/rollup", guards=[requires_admin], tags=["admin"], summary="Results rollup status")
async def get_rollup_status(request: Request) -> dict[str, object]:
    service: QueryService = request.app.state.query_service
    return await in_thread(rollup_status, service)


@post(
    "/api/v1/admin/rollup/rebuild",
    guards=[requires_admin],
    tags=["admin"],
    status_code=HTTP_202_ACCEPTED,
    summary="Recompute the results rollup from abacus.events",
)
async def request_rollup_rebuild(request: Request) -> dict[str, object]:
    """The roller rebuilds at its next step; results come from the events until it is done."""
    service: QueryService = request.app.state.query_service

    def request_rebuild() -> dict[str, object]:
        try:
            service.redis.set(redis_keys.ROLLUP_REBUILD, 1)
        except RedisError as exc:
            raise ServiceUnavailableException(f"Redis unavailable: {exc}", headers={"Retry-After": "1"}) from exc
        return rollup_status(service)

    return await in_thread(request_rebuild)


ROLLUP_ROUTES = [get_rollup_status, request_rollup_rebuild]
