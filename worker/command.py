"""`abacus worker` and `abacus rollup`: the stream's consumers, each scaled on its own."""

from __future__ import annotations

import argparse

from shared.cli_support import metrics_port_arg, require_servers, with_metrics_port
from shared.settings import Settings


def add_commands(commands: argparse._SubParsersAction) -> None:
    worker = commands.add_parser("worker", help="move beacons from the stream into ClickHouse")
    worker.add_argument("--burst", action="store_true", help="drain the stream, then exit")
    metrics_port_arg(worker)
    worker.set_defaults(run=run_worker)

    rollup = commands.add_parser(
        "rollup", help="only the roller that keeps the results rollup current (a standby while another runs)"
    )
    metrics_port_arg(rollup)
    rollup.set_defaults(run=run_rollup)


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    require_servers(settings, "abacus worker", clickhouse=True)
    from worker.main import run_worker_process

    return run_worker_process(with_metrics_port(args, settings), burst=args.burst)


def run_rollup(args: argparse.Namespace, settings: Settings) -> int:
    require_servers(settings, "abacus rollup", clickhouse=True)
    from worker.main import run_roller_process

    return run_roller_process(with_metrics_port(args, settings))
