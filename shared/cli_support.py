"""What every `abacus` sub-command shares: the user-error type, the listen and metrics-port
options, the check that the servers a role needs are configured, and running an app under granian.

Each service contributes its own sub-commands (ingest/command.py, worker/command.py, ...); the
`abacus` command (abacus/cli.py) collects them. They meet here, below all of them.
"""

from __future__ import annotations

import argparse
import dataclasses

from shared.settings import Settings


class CliError(Exception):
    """A problem the user can fix; printed without a traceback, exit status 2."""


def listen_args(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=port, help=f"port (default {port})")


def metrics_port_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="serve /metrics, /healthz, /readyz here (default ABACUS_METRICS_PORT)"
    )


def with_metrics_port(args: argparse.Namespace, settings: Settings) -> Settings:
    port = getattr(args, "metrics_port", None)
    return settings if port is None else dataclasses.replace(settings, metrics_port=port)


def require_servers(settings: Settings, role: str, clickhouse: bool) -> None:
    if not settings.redis_url:
        raise CliError(f"{role} needs ABACUS_REDIS_URL (e.g. redis://localhost:6379/0)")
    if clickhouse:
        url = settings.clickhouse_url or ""
        if not url:
            raise CliError(f"{role} needs ABACUS_CLICKHOUSE_URL (e.g. http://default:@localhost:8123)")
        if url.startswith("chdb:"):
            raise CliError(
                f"{role} cannot use chdb:// - chDB lives inside one process and cannot be shared; "
                "use a ClickHouse server URL, or run everything in one process with `abacus serve`"
            )


def serve_granian(settings: Settings, target: str, host: str, port: int, workers: int, rsgi: bool = False) -> int:
    from granian import Granian
    from granian.constants import Interfaces

    from shared.http_edge import allow_open_files, granian_options
    from shared.metrics_dir import prepare_multiprocess_dir, remove_multiprocess_dir

    if rsgi:
        # The RSGI apps here serve no websockets: granian then refuses upgrades itself.
        options = {"interface": Interfaces.RSGI, "websockets": False}
    else:
        options = {"interface": Interfaces.ASGI}
    allow_open_files(settings.http_max_connections)
    options.update(granian_options(settings))
    # Before granian starts its worker processes: each then counts into the shared directory,
    # and every scrape, whichever process answers it, sums them all.
    made = prepare_multiprocess_dir()
    try:
        Granian(target, address=host, port=port, workers=workers, factory=True, **options).serve()  # type: ignore[arg-type]
    finally:
        remove_multiprocess_dir(made)
    return 0
