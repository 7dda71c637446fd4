"""The `abacus` command: the services' own sub-commands (ingest, query-api, worker, rollup, jobs)
and those that span them (serve, status, migrate, token, sql). Each sub-command imports only what
its role needs, so `abacus worker` never loads Litestar and `abacus token` starts instantly."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import fcntl
import logging
import re
import sys
from pathlib import Path

from abacus.serve_command import read_secret, run_serve
from ingest.command import add_commands as ingest_commands
from jobs.command import add_commands as jobs_commands
from query_api.command import add_commands as query_commands
from shared.cli_support import CliError, listen_args
from shared.settings import Settings, SettingsError
from worker.command import add_commands as worker_commands

log = logging.getLogger("abacus")


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
    listen_args(serve, port=8000)
    serve.add_argument("--data-dir", type=Path, default=None, help="data directory (default ./.abacus)")
    serve.set_defaults(run=run_serve)

    # Each service contributes its own sub-commands.
    for add_commands in (ingest_commands, query_commands, worker_commands, jobs_commands):
        add_commands(commands)

    status = commands.add_parser("status", help="one screen: stream, pending per group, lag, dead letters, rollers, registry")
    status.add_argument(
        "--data-dir", type=Path, default=None, help="with no ABACUS_REDIS_URL: serve's data dir (default ./.abacus)"
    )
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


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.redis_url:  # then the embedded Valkey of the serve running on the data dir
        from abacus.embedded import running_url

        url = running_url(settings.data_dir)
        if url is None:
            raise CliError(
                f"no ABACUS_REDIS_URL set and no `abacus serve` running on {settings.data_dir} (its embedded Valkey "
                "does not answer): start serve, give its --data-dir, or set ABACUS_REDIS_URL"
            )
        settings = dataclasses.replace(settings, redis_url=url)
    from redis.exceptions import RedisError

    from abacus.status_report import format_status, print_report
    from shared.redis_conn import sync_client_for
    from shared.redis_keys import stream_layout
    from shared.stream_status import read_status

    client = sync_client_for(settings, socket_timeout=5)
    try:
        # Read everything first: only Redis's errors are Redis's (a closed stdout is not).
        statuses = [read_status(client, shard.stream, shard.dead_letter) for shard in stream_layout(settings)]
    except (RedisError, OSError) as exc:
        raise CliError(f"Redis does not answer: {exc}") from None
    finally:
        client.close()
    for status in statuses:  # one screen per stream shard (one by default)
        if not print_report(format_status(status, settings.consumer_group)):
            break
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
            settings.clickhouse_analyst_password,
            settings.sql_max_execution_s,
            settings.sql_max_result_rows,
            settings.sql_max_memory_bytes,
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
    secret = settings.jwt_secret or read_secret(settings.data_dir)
    if not secret:
        raise CliError("no ABACUS_JWT_SECRET set and no secret in the data dir (start `abacus serve` once)")
    try:
        ttl = parse_ttl(args.ttl)
        print(mint_token(secret, args.sub, args.role, ttl, issuer=settings.jwt_issuer, audience=settings.jwt_audience))
    except (AuthConfigError, ValueError) as exc:
        raise CliError(str(exc)) from None
    return 0


def run_sql(args: argparse.Namespace, settings: Settings) -> int:
    from abacus.sql_client import SqlClientError
    from abacus.sql_client import run_sql as send

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


if __name__ == "__main__":
    sys.exit(main())
