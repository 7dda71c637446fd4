"""Large exports: an experiment's events written to a file the admin downloads once the job is
done (`GET /api/v1/admin/jobs/{id}/download`), for exports too long for one HTTP response.

The query streams from ClickHouse into ``<job id>.<ext>.part`` and is renamed when complete, so
a file that exists is whole; a job run again rewrites it. Without ClickHouse's time limit of the
analyst session (an export may take long), with its memory limit. The export directory must be
one the query API can read too: the data dir under `abacus serve`, a shared volume otherwise.
"""

from __future__ import annotations

import os

from jobs.progress import report
from query_api.export_files import export_path
from query_api.sql_exec import FORMATS, STREAM_SETTINGS, stream_query
from shared.clickhouse import ClickHouse
from shared.event_columns import COLUMN_NAMES
from shared.settings import Settings

# Every column of the table, in its order: an export is the events as stored.
EXPORTED_COLUMNS = ", ".join(COLUMN_NAMES)


def export_events(settings: Settings, clickhouse: ClickHouse, experiment_key: str, output_format: str, job_id: str) -> dict:
    output = FORMATS[output_format]
    target = export_path(settings, job_id, output_format)
    target.parent.mkdir(parents=True, exist_ok=True)
    sql = (
        f"SELECT {EXPORTED_COLUMNS} FROM abacus.events FINAL WHERE experiment_key = {{key:String}} "
        "ORDER BY experiment_key, variant_key, session_id, event_id"
    )
    limits = {**STREAM_SETTINGS, "max_memory_usage": settings.sql_max_memory_bytes}
    partial = target.with_name(target.name + ".part")
    written = 0
    with open(partial, "wb") as out:
        for chunk in stream_query(clickhouse.url, sql, output, limits, {"key": experiment_key}):
            out.write(chunk)
            written += len(chunk)
            report(bytes_written=written)
    os.replace(partial, target)
    return {"file": target.name, "bytes": written, "format": output_format, "experiment_key": experiment_key}
