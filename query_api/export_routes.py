"""Exports: the results as CSV, and an experiment's raw events as CSV or Parquet, streamed."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Request, Response, get
from litestar.params import FromQuery, QueryParameter
from litestar.response import Stream

from query_api.auth import requires_analyst
from query_api.errors import BadQuery, SqlRefused
from query_api.results_csv import results_csv
from query_api.results_routes import build_results, experiments_for, parse_instant, results_query
from query_api.service import QueryService, in_thread
from query_api.sql_exec import FORMATS, STREAM_SETTINGS, QueryFailed, stream_query
from shared.event_columns import COLUMN_NAMES
from shared.settings import Settings

EVENT_COLUMNS = ", ".join(COLUMN_NAMES)
"""Every column of abacus.events, in the table's order (shared/event_columns.py): an export is the events as stored."""


@get("/api/v1/experiments/results.csv", guards=[requires_analyst], tags=["results"], summary="Results as CSV")
async def results_as_csv(
    request: Request,
    experiment_key: FromQuery[str | None] = None,
    from_: Annotated[str | None, QueryParameter(name="from")] = None,
    to: FromQuery[str | None] = None,
    confidence: FromQuery[float] = 0.95,
    sequential: FromQuery[bool] = False,
    phase: FromQuery[str | None] = None,
) -> Response[str]:
    """The same parameters and numbers as ``/api/v1/experiments/results``, one row per variant."""
    service: QueryService = request.app.state.query_service
    query = results_query(experiment_key, from_, to, confidence, sequential, phase, None)
    body, freshness_headers = await in_thread(build_results, service, query)
    return Response(
        results_csv(body),
        media_type="text/csv",
        headers={**freshness_headers, "Content-Disposition": 'attachment; filename="results.csv"'},
    )


@get("/api/v1/experiments/events", guards=[requires_analyst], tags=["results"], summary="Raw events of an experiment")
async def export_events(
    request: Request,
    experiment_key: FromQuery[str],
    from_: Annotated[str | None, QueryParameter(name="from")] = None,
    to: FromQuery[str | None] = None,
    output_format: Annotated[Literal["csv", "parquet"], QueryParameter(name="format")] = "csv",
) -> Stream:
    """Every stored event of ``experiment_key`` received in ``[from, to)`` (all time without them),
    each once (deduplicated), in the table's order: variant, session, event. Streamed from
    ClickHouse as it reads, so an export of any size is never held in memory."""
    service: QueryService = request.app.state.query_service
    settings: Settings = request.app.state.settings
    start, end = parse_instant("from", from_), parse_instant("to", to)
    if start is not None and end is not None and start >= end:
        raise BadQuery("from", "from must be earlier than to")
    await in_thread(experiments_for, service, experiment_key)  # 404 for a key never defined
    sql = f"SELECT {EVENT_COLUMNS} FROM abacus.events FINAL WHERE experiment_key = {{key:String}}"
    parameters: dict[str, object] = {"key": experiment_key}
    if start is not None:
        sql += " AND received_at >= {start:DateTime64(3, 'UTC')}"
        parameters["start"] = start
    if end is not None:
        sql += " AND received_at < {end:DateTime64(3, 'UTC')}"
        parameters["end"] = end
    sql += " ORDER BY experiment_key, variant_key, session_id, event_id"  # the sorting key: read in order, no sort
    limits = {
        **STREAM_SETTINGS,
        "max_execution_time": settings.sql_max_execution_s,
        "max_memory_usage": settings.sql_max_memory_bytes,
    }
    output = FORMATS[output_format]
    try:
        body = await in_thread(stream_query, service.clickhouse.url, sql, output, limits, parameters)
    except QueryFailed as exc:
        raise SqlRefused(exc.status, str(exc)) from None
    filename = f"{experiment_key}-events.{output.extension}"
    return Stream(body, media_type=output.media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


EXPORT_ROUTES = [results_as_csv, export_events]
