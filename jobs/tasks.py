"""The functions rq runs, by name (``jobs.tasks.<kind>``): each takes plain arguments (what the
admin asked), finds settings and connections in the job context, and returns a JSON-able result."""

from __future__ import annotations

from rq import get_current_job

from jobs import alerts, dead_letters, erase, export, verify
from jobs.context import current
from shared.redis_keys import stream_layout


def replay_dead_letters(ids: list[str] | None = None, dry_run: bool = False) -> dict:
    ctx = current()
    # Each stream shard's dead letters go back to that shard's stream (one shard by default).
    results = [
        dead_letters.replay(ctx.redis, shard.stream, shard.dead_letter, ids, dry_run) for shard in stream_layout(ctx.settings)
    ]
    if len(results) == 1:
        return results[0]
    found = {entry["id"] for result in results for entry in result["replayed"]} | {
        i for result in results for i in result["already_replayed"]
    }
    return {
        "dry_run": dry_run,
        "replayed": [entry for result in results for entry in result["replayed"]],
        "events": sum(result["events"] for result in results),
        "already_replayed": [i for result in results for i in result["already_replayed"]],
        "missing": sorted({i for result in results for i in result["missing"]} - found) if ids is not None else [],
    }


def erase_session(session_id: str, requested_by: str, requested_at: str) -> dict:
    ctx = current()
    job = get_current_job()
    job_id = job.id if job is not None else f"direct-{requested_at}"
    return erase.erase_session(ctx.settings, ctx.clickhouse, ctx.redis, session_id, requested_by, requested_at, job_id)


def verify_rollup() -> dict:
    ctx = current()
    return verify.verify_rollup(ctx.settings, ctx.clickhouse, ctx.redis)


def export_events(experiment_key: str, output_format: str = "csv") -> dict:
    ctx = current()
    job = get_current_job()
    job_id = job.id if job is not None else f"direct-{experiment_key}"
    return export.export_events(ctx.settings, ctx.clickhouse, experiment_key, output_format, job_id)


def check_alerts() -> dict:
    ctx = current()
    return alerts.check_alerts(ctx.settings, ctx.clickhouse, ctx.redis)
