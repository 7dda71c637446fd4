"""A running job's progress, kept in its rq meta for `GET /api/v1/admin/jobs/{id}`."""

from __future__ import annotations

from typing import Any

from rq import get_current_job


def report(**progress: Any) -> None:
    job = get_current_job()
    if job is not None:  # called outside rq (a test calling the function directly): nothing to report to
        job.meta["progress"] = progress
        job.save_meta()
