"""Definitions for every signed-in role, read-only: what the dashboard shows an analyst (the
/api/admin routes stay admin-only, and hidden while the kill switch is off)."""

from __future__ import annotations

from litestar import Request, get
from litestar.params import FromPath, FromQuery

from query_api.auth import requires_analyst
from query_api.service import in_thread
from shared.registry.models import Experiment, HistoryEntry, SiteSettings


@get("/api/v1/experiments", guards=[requires_analyst], tags=["results"], summary="Experiment definitions (read-only)")
async def list_definitions(request: Request, include_archived: FromQuery[bool] = False) -> list[Experiment]:
    snapshot = await in_thread(request.app.state.query_service.store.snapshot)
    return snapshot.experiments if include_archived else snapshot.active()


@get(
    "/api/v1/experiments/{key:str}/history", guards=[requires_analyst], tags=["results"], summary="Definition history (read-only)"
)
async def definition_history(request: Request, key: FromPath[str]) -> list[HistoryEntry]:
    """Every version of the definition, archived ones included, oldest first."""
    return await in_thread(request.app.state.query_service.store.history, key)


@get("/api/v1/settings", guards=[requires_analyst], tags=["results"], summary="Site settings (read-only)")
async def read_settings(request: Request) -> SiteSettings:
    return (await in_thread(request.app.state.query_service.store.snapshot)).settings


DEFINITION_ROUTES = [list_definitions, definition_history, read_settings]
