"""Admin endpoints that hand work to background jobs (rq), and the jobs' state.

A POST answers 202 with the job's state at once; ``GET /api/v1/admin/jobs/{id}`` reports its
status, progress and, when finished, its result. Listing dead letters needs no job."""

from __future__ import annotations

import datetime as dt
import re
from functools import partial
from typing import Annotated, Literal

import msgspec
from litestar import Request, get, post
from litestar.exceptions import ClientException, NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import File
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_409_CONFLICT
from msgspec import Meta

from query_api.auth import principal, requires_admin
from query_api.errors import BadQuery
from query_api.export_files import export_path
from query_api.results_routes import experiments_for
from query_api.service import QueryService, in_thread
from query_api.sql_exec import FORMATS
from shared.dead_letter_list import DeadLetter, list_dead_letters
from shared.job_queue import JobState, enqueue, job_state
from shared.redis_keys import stream_layout
from shared.settings import Settings

_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")
StreamId = Annotated[str, Meta(pattern=r"^\d{1,20}-\d{1,20}$", examples=["1764547200000-0"])]


class ReplayRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ids: Annotated[list[StreamId], Meta(max_length=10_000)] | None = None
    """Dead-letter entry ids (from GET /api/v1/admin/dead-letters); or ``all``."""
    all: bool = False
    dry_run: bool = False
    """Report what would be replayed, change nothing."""


class ExportRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    experiment_key: Annotated[str, Meta(min_length=1, max_length=200)]
    format: Literal["csv", "parquet"] = "csv"


class EraseRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    session_id: Annotated[str, Meta(min_length=1, max_length=200)]


def _service(request: Request) -> QueryService:
    return request.app.state.query_service


def _jobs_redis(request: Request):  # type: ignore[no-untyped-def]
    return request.app.state.jobs_redis  # rq's queue (ABACUS_JOBS_REDIS_URL, else the main Redis)


def _enqueue(request: Request, kind: str, **kwargs: object) -> JobState:
    client = _jobs_redis(request)
    job = enqueue(client, kind, **kwargs)
    state = job_state(client, job.id)
    assert state is not None, "a job just enqueued exists"
    return state


@get("/api/v1/admin/dead-letters", guards=[requires_admin], tags=["admin"], summary="Dead letters with their reasons")
async def get_dead_letters(request: Request, after: FromQuery[str] = "-", limit: FromQuery[int] = 100) -> list[DeadLetter]:
    """Oldest first; page on with ``after`` = the last id seen. ``replayed_as``: the stream id a replay gave it."""
    if after != "-" and not _STREAM_ID.fullmatch(after):
        raise BadQuery("after", "after must be a stream id such as 1764547200000-0")
    if not 1 <= limit <= 1000:
        raise BadQuery("limit", "limit must be between 1 and 1000")
    settings: Settings = request.app.state.settings
    redis_client = _service(request).redis

    def every_shard() -> list[DeadLetter]:
        # One dead-letter stream per stream shard (one by default): the oldest of them all first.
        found = [
            letter
            for shard in stream_layout(settings)
            for letter in list_dead_letters(redis_client, shard.dead_letter, after, limit)
        ]
        return sorted(found, key=lambda letter: tuple(int(part) for part in letter.id.split("-")))[:limit]

    return await in_thread(every_shard)


@post(
    "/api/v1/admin/dead-letters/replay",
    guards=[requires_admin],
    tags=["admin"],
    status_code=HTTP_202_ACCEPTED,
    summary="Replay dead letters to the stream (a job)",
)
async def replay_dead_letters(request: Request, data: JSONBody[ReplayRequest]) -> JobState:
    """Send ``ids`` (or ``all``) back to the stream after the cause is fixed; each dead letter is
    replayed at most once, and a replayed event that was stored before still counts once."""
    if data.all == (data.ids is not None):
        raise BadQuery("$.ids", "give either ids or all: true")
    if data.ids is not None and not data.ids:
        raise BadQuery("$.ids", "ids must not be empty")
    return await in_thread(partial(_enqueue, request, "replay_dead_letters", ids=data.ids, dry_run=data.dry_run))


@post(
    "/api/v1/admin/erase",
    guards=[requires_admin],
    tags=["admin"],
    status_code=HTTP_202_ACCEPTED,
    summary="Erase a session's events (a job)",
)
async def erase_session(request: Request, data: JSONBody[EraseRequest]) -> JobState:
    """Every event of ``session_id`` is deleted from ClickHouse and the rollup recomputed; an audit
    row records who asked and when (the id only as a SHA-256)."""
    requested_at = dt.datetime.now(dt.timezone.utc).isoformat()
    sub = principal(request).sub
    return await in_thread(
        partial(_enqueue, request, "erase_session", session_id=data.session_id, requested_by=sub, requested_at=requested_at)
    )


@post(
    "/api/v1/admin/exports",
    guards=[requires_admin],
    tags=["admin"],
    status_code=HTTP_202_ACCEPTED,
    summary="Export an experiment's events to a file (a job)",
)
async def export_events(request: Request, data: JSONBody[ExportRequest]) -> JobState:
    """Every stored event of ``experiment_key``, each once, as CSV or Parquet; download it from
    ``GET /api/v1/admin/jobs/{id}/download`` once the job is finished."""
    await in_thread(experiments_for, _service(request), data.experiment_key)  # 404 for a key never defined
    return await in_thread(
        partial(_enqueue, request, "export_events", experiment_key=data.experiment_key, output_format=data.format)
    )


@get("/api/v1/admin/jobs/{job_id:str}/download", guards=[requires_admin], tags=["admin"], summary="An export job's file")
async def download_export(request: Request, job_id: FromPath[str]) -> File:
    state = await in_thread(job_state, _jobs_redis(request), job_id) if _JOB_ID.fullmatch(job_id) else None
    if state is None or state.kind != "export_events":
        raise NotFoundException(f"no export job {job_id}")
    if state.status != "finished":
        raise ClientException(f"the export is {state.status}, not finished yet", status_code=HTTP_409_CONFLICT)
    settings: Settings = request.app.state.settings
    path = export_path(settings, job_id, state.result["format"])
    if not path.is_file():
        raise NotFoundException("the export's file is gone (exports are kept in ABACUS_EXPORT_DIR until removed)")
    return File(
        path,
        filename=f"{state.result['experiment_key']}-events.{path.suffix.lstrip('.')}",
        media_type=FORMATS[state.result["format"]].media_type,
    )


def _job_without_arguments(path: str, kind: str, summary: str, description: str) -> HTTPRouteHandler:
    """POST `path` (admin) enqueues the job `kind`, which takes no argument, and answers its state (202)."""

    async def enqueue(request: Request) -> JobState:
        return await in_thread(partial(_enqueue, request, kind))

    enqueue.__name__ = enqueue.__qualname__ = kind
    return post(
        path,
        guards=[requires_admin],
        tags=["admin"],
        status_code=HTTP_202_ACCEPTED,
        summary=summary,
        description=description,
    )(enqueue)


check_alerts = _job_without_arguments(
    "/api/v1/admin/alerts/check",
    "check_alerts",
    "Send due alert webhooks now (a job)",
    "What runs every ABACUS_ALERT_CHECK_S: each SRM or significance event goes to each webhook once.",
)
verify_rollup = _job_without_arguments(
    "/api/v1/admin/rollup/verify",
    "verify_rollup",
    "Compare the rollup with a recomputation from the events (a job)",
    "What `abacus jobs` runs nightly; the outcome is also exported as ``abacus_rollup_verification_mismatches``.",
)


@get(
    "/api/v1/admin/jobs/{job_id:str}",
    guards=[requires_admin],
    tags=["admin"],
    summary="A background job's status, progress and result",
)
async def get_job(request: Request, job_id: FromPath[str]) -> JobState:
    # rq's ids are letters, digits, dashes and underscores: anything else names no job.
    state = await in_thread(job_state, _jobs_redis(request), job_id) if _JOB_ID.fullmatch(job_id) else None
    if state is None:
        raise NotFoundException(f"no job {job_id} (finished jobs are kept for 7 days)")
    return state


JOB_ROUTES = [
    get_dead_letters,
    replay_dead_letters,
    erase_session,
    export_events,
    download_export,
    check_alerts,
    verify_rollup,
    get_job,
]
