"""Admin view of the results rollup: is it current, how much has it not folded yet, and a rebuild
on request (after deleting or correcting rows of abacus.events by hand, say)."""

from __future__ import annotations

import msgspec
from litestar import Request, get, post
from litestar.exceptions import ServiceUnavailableException
from litestar.status_codes import HTTP_202_ACCEPTED
from redis.exceptions import RedisError

from query_api.auth import requires_admin
from query_api.service import QueryService, in_thread


class RollupStatus(msgspec.Struct):
    live: bool
    """All-time results come from the rollup now: built, folded by a running roller, and nothing
    the workers stored more than ``max_lag_ms`` ago left unfolded."""
    built: bool
    roller_running: bool
    behind_ms: int | None
    """Age of the oldest event the workers stored that the rollup has not folded (0: none; None: not built)."""
    unfolded_events: int | None
    """How many such events (a lower bound when ``unfolded_exact`` is false; None: not built)."""
    unfolded_exact: bool
    max_lag_ms: int
    rebuild_requested: bool
    shards: int


def rollup_status(service: QueryService) -> RollupStatus:
    """Measured for every experiment of the registry (archived ones included)."""
    keys = [experiment.experiment_key for experiment in service.store.snapshot().experiments]
    rollup = service.rollup()
    try:
        freshness = rollup.freshness(keys)
    except RedisError as exc:
        raise ServiceUnavailableException(f"Redis unavailable: {exc}", headers={"Retry-After": "1"}) from exc
    return RollupStatus(
        live=freshness.current,
        built=freshness.built,
        roller_running=freshness.roller_running,
        behind_ms=freshness.behind_ms if freshness.built else None,
        unfolded_events=freshness.unfolded_events if freshness.built else None,
        unfolded_exact=freshness.unfolded_exact,
        max_lag_ms=freshness.max_lag_ms,
        rebuild_requested=freshness.rebuild_requested,
        shards=rollup.shards,
    )


def rollup_status_example() -> dict[str, object]:
    """A live rollup with a few events of the last batch not folded yet (for the OpenAPI schema)."""
    return msgspec.to_builtins(RollupStatus(True, True, True, 180, 42, True, 2000, False, 1))


@get(
    "/api/v1/admin/rollup",
    guards=[requires_admin],
    tags=["admin"],
    summary="Results rollup status",
    opt={"openapi_example": rollup_status_example},
)
async def get_rollup_status(request: Request) -> RollupStatus:
    service: QueryService = request.app.state.query_service
    return await in_thread(rollup_status, service)


@post(
    "/api/v1/admin/rollup/rebuild",
    guards=[requires_admin],
    tags=["admin"],
    status_code=HTTP_202_ACCEPTED,
    summary="Recompute the results rollup from abacus.events",
)
async def request_rollup_rebuild(request: Request) -> RollupStatus:
    """Every share rebuilds at its roller's next step, once; results come from the events until it is done."""
    service: QueryService = request.app.state.query_service

    def request_rebuild() -> RollupStatus:
        try:
            service.rollup().request_rebuild()
        except RedisError as exc:
            raise ServiceUnavailableException(f"Redis unavailable: {exc}", headers={"Retry-After": "1"}) from exc
        return rollup_status(service)

    return await in_thread(request_rebuild)


ROLLUP_ROUTES = [get_rollup_status, request_rollup_rebuild]
