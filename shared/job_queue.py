"""Enqueueing jobs and reading their state: what the query API needs of rq, no job code.

rq needs one plain Redis server: its enqueue and its job bookkeeping are transactions over keys
that a Redis Cluster puts in different slots. With ABACUS_REDIS_CLUSTER, the queue lives on
ABACUS_JOBS_REDIS_URL instead; the jobs still read and write the stream on the cluster."""

from __future__ import annotations

from typing import Any

import msgspec
import redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from shared.redis_conn import sync_client, sync_client_for
from shared.settings import Settings, SettingsError

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


def check_jobs_redis(settings: Settings) -> None:
    """Refuse, in one sentence, a deployment whose jobs would have no Redis rq can use."""
    if settings.redis_cluster and not settings.jobs_redis_url:
        raise SettingsError(
            "ABACUS_REDIS_CLUSTER is set, but background jobs (rq) need a plain Redis/Valkey server: "
            "set ABACUS_JOBS_REDIS_URL (e.g. redis://jobs-redis:6379/0)"
        )


def jobs_redis(settings: Settings, socket_timeout: float = 5.0) -> redis.Redis:
    """The client for rq's queue and job state: ABACUS_JOBS_REDIS_URL, else the main Redis (a
    single server or Sentinel's primary)."""
    check_jobs_redis(settings)
    if settings.jobs_redis_url:
        return sync_client(settings.jobs_redis_url, socket_timeout)
    return sync_client_for(settings, socket_timeout)


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
