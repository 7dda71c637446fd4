"""Enqueueing jobs and reading their state: what the query API needs of rq, no job code."""

from __future__ import annotations

from typing import Any

import msgspec
import redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

QUEUE_NAME = "abacus-jobs"
# A job's outcome stays readable for a week; a failed one too, for the operator to look at.
RESULT_TTL_S = 7 * 24 * 3600
JOB_TIMEOUT_S = 6 * 3600


class JobState(msgspec.Struct, omit_defaults=True):
    id: str
    kind: str
    status: str
    """queued, started, finished, failed (and rq's deferred, scheduled, stopped, canceled)."""
    enqueued_at: str | None = None
    ended_at: str | None = None
    progress: dict[str, Any] | None = None
    result: Any = None
    error: str | None = None


def job_queue(client: redis.Redis) -> Queue:
    return Queue(QUEUE_NAME, connection=client)


def enqueue(client: redis.Redis, kind: str, **kwargs: Any) -> Job:
    """``kind``: a function of jobs.tasks. Requeued up to three times on failure (each job is
    idempotent); at once, as a delayed retry would need rq's scheduler, a process of its own, and
    jobs that wait for something (erase, verification) wait inside themselves first."""
    return job_queue(client).enqueue_call(
        f"jobs.tasks.{kind}",
        kwargs=kwargs,
        timeout=JOB_TIMEOUT_S,
        result_ttl=RESULT_TTL_S,
        failure_ttl=RESULT_TTL_S,
        retry=Retry(max=3),
        meta={"kind": kind},
    )


def job_state(client: redis.Redis, job_id: str) -> JobState | None:
    try:
        job = Job.fetch(job_id, connection=client)
    except NoSuchJobError:
        return None
    status = job.get_status()
    error = None
    if status == JobStatus.FAILED:
        # The last line of the traceback: the exception, without file paths.
        lines = (job.exc_info or "").strip().splitlines()
        error = lines[-1] if lines else "failed"
    return JobState(
        id=job.id,
        kind=str(job.meta.get("kind", job.func_name)),
        status=str(status.value if hasattr(status, "value") else status),
        enqueued_at=job.enqueued_at.isoformat() if job.enqueued_at else None,
        ended_at=job.ended_at.isoformat() if job.ended_at else None,
        progress=job.meta.get("progress"),
        result=job.return_value() if status == JobStatus.FINISHED else None,
        error=error,
    )
