"""Where an export job's file lives: the job (jobs.export) writes it there and the query API's
download route reads it from there, so both take the path from here."""

from __future__ import annotations

from pathlib import Path

from query_api.sql_exec import FORMATS
from shared.settings import Settings


def export_dir(settings: Settings) -> Path:
    return Path(settings.export_dir) if settings.export_dir else settings.data_dir / "exports"


def export_path(settings: Settings, job_id: str, output_format: str) -> Path:
    return export_dir(settings) / f"{job_id}.{FORMATS[output_format].extension}"
