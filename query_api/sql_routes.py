"""POST /api/v1/sql: read-only SQL for analysts, on whatever ClickHouse this deployment runs
(the embedded chDB of `abacus serve` included, which no second process can open)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Request, post
from litestar.params import JSONBody, QueryParameter
from litestar.response import Stream
from msgspec import Meta

from query_api.auth import requires_analyst
from query_api.errors import SqlRefused
from query_api.service import in_thread
from query_api.sql_exec import FORMATS, QueryFailed, readonly_settings, stream_query
from shared.settings import Settings

Format = Literal["json", "csv", "tsv", "parquet"]


class SqlQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    query: Annotated[
        str,
        Meta(min_length=1, max_length=100_000, examples=["SELECT variant_key, count() FROM abacus.events GROUP BY variant_key"]),
    ]
    format: Format = "json"


def analyst_limits(settings: Settings) -> dict[str, object]:
    return readonly_settings(settings.sql_max_execution_s, settings.sql_max_result_rows, settings.sql_max_memory_bytes)


@post("/api/v1/sql", guards=[requires_analyst], tags=["sql"], status_code=200, summary="Read-only SQL on ClickHouse")
async def run_sql(
    request: Request,
    data: JSONBody[SqlQuery],
    output_format: Annotated[Format | None, QueryParameter(name="format")] = None,
) -> Stream:
    """Runs ``query`` with ClickHouse's ``readonly = 1`` and this deployment's time, row and memory
    limits; answers JSON rows (one object per line), CSV, TSV or Parquet, streamed. Writes, DDL and
    changed settings are refused with 403, a query past its limits with 422, bad SQL with 400."""
    settings: Settings = request.app.state.settings
    output = FORMATS[output_format or data.format]
    url = request.app.state.query_service.clickhouse.url
    try:
        body = await in_thread(stream_query, url, data.query, output, analyst_limits(settings))
    except QueryFailed as exc:
        raise SqlRefused(exc.status, str(exc)) from None
    return Stream(
        body, media_type=output.media_type, headers={"Content-Disposition": f'inline; filename="result.{output.extension}"'}
    )


SQL_ROUTES = [run_sql]
