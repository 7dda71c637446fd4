"""`abacus query-api`: the registry, admin and results API on its own."""

from __future__ import annotations

import argparse

from shared.cli_support import CliError, listen_args, require_servers, serve_granian
from shared.settings import Settings


def add_commands(commands: argparse._SubParsersAction) -> None:
    query = commands.add_parser("query-api", help="registry, admin and results API")
    listen_args(query, port=8002)
    query.add_argument("--workers", type=int, default=1, help="server worker processes")
    query.set_defaults(run=run_query_api)


def run_query_api(args: argparse.Namespace, settings: Settings) -> int:
    require_servers(settings, "abacus query-api", clickhouse=True)
    from query_api.auth import AuthConfigError, TokenVerifier
    from shared.job_queue import check_jobs_redis

    check_jobs_redis(settings)  # its admin routes enqueue jobs: refuse before forking workers

    try:
        TokenVerifier(settings)  # refuse to start without a usable secret, before forking workers
    except AuthConfigError as exc:
        raise CliError(str(exc)) from None
    return serve_granian(settings, "query_api.app:app_from_env", args.host, args.port, args.workers)
