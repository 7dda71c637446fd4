"""`abacus ingest`: the beacon endpoints on their own, against a Redis server."""

from __future__ import annotations

import argparse

from shared.cli_support import listen_args, require_servers, serve_granian
from shared.settings import Settings


def add_commands(commands: argparse._SubParsersAction) -> None:
    ingest = commands.add_parser("ingest", help="the beacon endpoints (needs ABACUS_REDIS_URL)")
    listen_args(ingest, port=8001)
    ingest.add_argument("--workers", type=int, default=1, help="server worker processes")
    ingest.set_defaults(run=run_ingest)


def run_ingest(args: argparse.Namespace, settings: Settings) -> int:
    require_servers(settings, "abacus ingest", clickhouse=False)
    from ingest.sink import lean_address

    # The WAIT settings are checked here, so a bad one is one sentence, not a traceback from
    # each granian worker process building its app.
    lean_address(settings)
    # RSGI: the beacon POSTs skip granian's ASGI layer, half of their cost (see ingest.edge_rsgi).
    return serve_granian(settings, "ingest.app:app_from_env", args.host, args.port, args.workers, rsgi=True)
