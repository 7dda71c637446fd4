"""`abacus jobs`: an rq worker running the background jobs."""

from __future__ import annotations

import argparse

from shared.cli_support import metrics_port_arg, require_servers, with_metrics_port
from shared.settings import Settings


def add_commands(commands: argparse._SubParsersAction) -> None:
    jobs = commands.add_parser("jobs", help="run background jobs (rq worker: replay, erase, exports, verification, alerts)")
    jobs.add_argument("--burst", action="store_true", help="run the jobs queued now, then exit")
    metrics_port_arg(jobs)
    jobs.set_defaults(run=run_jobs)


def run_jobs(args: argparse.Namespace, settings: Settings) -> int:
    require_servers(settings, "abacus jobs", clickhouse=True)
    from jobs.runner import run_jobs_process
    from shared.job_queue import check_jobs_redis

    check_jobs_redis(settings)  # before connecting anywhere: one sentence, not an rq traceback

    return run_jobs_process(with_metrics_port(args, settings), burst=args.burst)
