"""Public registry, admin definitions with history, and site settings."""

from __future__ import annotations

from litestar import Request, Response, delete, get, post, put
from litestar.connection import ASGIConnection
from litestar.exceptions import NotFoundException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from query_api.auth import principal, requires_admin
from query_api.errors import BadQuery
from query_api.service import QueryService, in_thread
from shared.registry.models import (
    Experiment,
    ExperimentFields,
    HistoryEntry,
    NewExperiment,
    PublicExperiment,
    SiteSettings,
    SiteSettingsBody,
)

PUBLIC_MAX_AGE_S = 5


def requires_experiments_enabled(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    # The original backend hid its experiment admin entirely behind the kill switch.
    service: QueryService = connection.app.state.query_service
    snapshot = service.registry.snapshot
    if snapshot is not None and not snapshot.settings.experiments_enabled:
        raise NotFoundException("Experiments are disabled for this site")


def if_match_version(request: Request) -> int | None:
    raw = request.headers.get("if-match")
    if raw is None or raw.strip() == "*":
        return None
    text = raw.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise BadQuery("If-Match", 'If-Match must be an experiment version such as "3"')
    return int(text)


def _etag(experiment: Experiment) -> dict[str, str]:
    return {"ETag": f'"{experiment.version}"'}


@get("/api/experiments", tags=["public"], summary="Experiment registry for pages")
async def list_public(request: Request) -> Response[list[PublicExperiment]]:
    service: QueryService = request.app.state.query_service
    snapshot = service.require_snapshot()
    etag = f'"g{snapshot.generation}"'
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={PUBLIC_MAX_AGE_S}"}
    if request.headers.get("if-none-match") == etag:
        return Response(None, status_code=304, headers=headers)  # type: ignore[arg-type]
    body = [e.public() for e in snapshot.active()] if snapshot.settings.experiments_enabled else []
    return Response(body, headers=headers)


admin_experiment_guards = [requires_admin, requires_experiments_enabled]


@get("/api/admin/experiments", guards=admin_experiment_guards, tags=["admin"])
async def list_admin(request: Request, include_archived: FromQuery[bool] = False) -> list[Experiment]:
    snapshot = await in_thread(request.app.state.query_service.store.snapshot)
    return snapshot.experiments if include_archived else snapshot.active()


@post("/api/admin/experiments", guards=admin_experiment_guards, tags=["admin"], status_code=HTTP_201_CREATED)
async def create_experiment(request: Request, data: JSONBody[NewExperiment]) -> Response[Experiment]:
    service: QueryService = request.app.state.query_service
    sub = principal(request).sub
    created = await in_thread(service.apply, lambda store: store.create(data, sub))
    return Response(created, status_code=HTTP_201_CREATED, headers=_etag(created))


@get("/api/admin/experiments/{key:str}", guards=admin_experiment_guards, tags=["admin"])
async def get_experiment(request: Request, key: FromPath[str]) -> Response[Experiment]:
    experiment = (await in_thread(request.app.state.query_service.store.snapshot)).find(key)
    if experiment is None or experiment.archived:
        raise NotFoundException(f"No experiment {key}")
    return Response(experiment, headers=_etag(experiment))


@put("/api/admin/experiments/{key:str}", guards=admin_experiment_guards, tags=["admin"])
async def update_experiment(
    request: Request, key: FromPath[str], data: JSONBody[ExperimentFields], force: FromQuery[bool] = False
) -> Response[Experiment]:
    """409 when the change removes a variant that has events, or changes the allocations of an
    enabled experiment, unless ``force=true`` confirms it."""
    service: QueryService = request.app.state.query_service
    version, sub = if_match_version(request), principal(request).sub
    updated = await in_thread(service.apply, lambda store: store.update(key, data, sub, version, force))
    return Response(updated, status_code=HTTP_200_OK, headers=_etag(updated))


@delete("/api/admin/experiments/{key:str}", guards=admin_experiment_guards, tags=["admin"], status_code=HTTP_200_OK)
async def archive_experiment(request: Request, key: FromPath[str]) -> Experiment:
    """Archive: the definition leaves the registry and ingest; its events and history are kept."""
    service: QueryService = request.app.state.query_service
    version, sub = if_match_version(request), principal(request).sub
    return await in_thread(service.apply, lambda store: store.archive(key, sub, version))


@post("/api/admin/experiments/{key:str}/restore", guards=admin_experiment_guards, tags=["admin"], status_code=HTTP_200_OK)
async def restore_experiment(request: Request, key: FromPath[str]) -> Response[Experiment]:
    """Undo an archive: the definition returns to the registry (and to ingest) as it was."""
    service: QueryService = request.app.state.query_service
    version, sub = if_match_version(request), principal(request).sub
    restored = await in_thread(service.apply, lambda store: store.restore(key, sub, version))
    return Response(restored, headers=_etag(restored))


@get("/api/admin/experiments/{key:str}/history", guards=admin_experiment_guards, tags=["admin"])
async def experiment_history(request: Request, key: FromPath[str]) -> list[HistoryEntry]:
    return await in_thread(request.app.state.query_service.store.history, key)


@get("/api/admin/settings", guards=[requires_admin], tags=["admin"])
async def get_settings(request: Request) -> SiteSettings:
    return (await in_thread(request.app.state.query_service.store.snapshot)).settings


@put("/api/admin/settings", guards=[requires_admin], tags=["admin"])
async def put_settings(request: Request, data: JSONBody[SiteSettingsBody]) -> SiteSettings:
    service: QueryService = request.app.state.query_service
    sub = principal(request).sub
    return await in_thread(service.apply, lambda store: store.set_settings(data.experiments_enabled, sub))


REGISTRY_ROUTES = [
    list_public,
    list_admin,
    create_experiment,
    get_experiment,
    update_experiment,
    archive_experiment,
    restore_experiment,
    experiment_history,
    get_settings,
    put_settings,
]
