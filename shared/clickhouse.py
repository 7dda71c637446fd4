"""ClickHouse connections and schema migrations.

``chdb://PATH`` runs ClickHouse inside this process (clickhouse-connect's chDB interface); any
other URL is a ClickHouse server over HTTP(S). chDB hosts one engine per process, so only
``abacus serve`` may use it.
"""

from __future__ import annotations

import logging
import re
import threading
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)

MIGRATIONS_PACKAGE = "shared.clickhouse_schema"
"""Where the migrations are: package data, so a wheel carries them (importlib.resources)."""
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def is_chdb(url: str) -> bool:
    return url.startswith("chdb:")


def chdb_url(data_dir: Path) -> str:
    return "chdb://" + str((data_dir / "clickhouse").resolve())


CHDB_MERGE_NICE = 10
"""Linux nice value of the embedded engine's merge threads (ClickHouse's server setting
``os_threads_nice_value_merge_mutate``). In-process, merges share the cores with ingest, the
query API, the worker's inserts and Valkey; at the default priority they took a fifth of the CPU
during a drain and slowed the inserts they follow. Niced, they run on what the foreground leaves
idle, and ClickHouse still throttles inserts itself (``parts_to_delay_insert``) if parts pile up."""


def connect(url: str, cluster: str = "") -> Client:
    """``cluster``: ABACUS_CLICKHOUSE_CLUSTER; its session settings keep queries exact on the
    Distributed tables (shared/clickhouse_cluster.py)."""
    if is_chdb(url):
        if cluster:
            raise ValueError("ABACUS_CLICKHOUSE_CLUSTER needs a ClickHouse server, not the embedded chDB")
        # Take the whole remainder as the path: chdb://relative/dir would otherwise be parsed as
        # host "relative" and database "dir".
        path = url.split("://", 1)[1] or ":memory:"
        # Engine options take effect with the first client of the process (one engine per process).
        options = {"os_threads_nice_value_merge_mutate": CHDB_MERGE_NICE}
        return clickhouse_connect.get_client(interface="chdb", path=path, chdb_options=options)
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"ClickHouse URL must be http(s):// or chdb://, got {url!r}")
    if cluster:
        from shared.clickhouse_cluster import QUERY_SETTINGS

        return clickhouse_connect.get_client(dsn=url, autogenerate_session_id=False, settings=dict(QUERY_SETTINGS))
    return clickhouse_connect.get_client(dsn=url, autogenerate_session_id=False)


class ClickHouse:
    """Hands each thread its own client: a chDB client serializes its calls behind a lock, and
    the HTTP client is cheapest with one connection pool per thread."""

    def __init__(self, url: str, cluster: str = "") -> None:
        self.url = url
        self.cluster = cluster
        self._local = threading.local()
        self._all: list[Client] = []
        self._lock = threading.Lock()

    def client(self) -> Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = connect(self.url, self.cluster)
            self._local.client = client
            with self._lock:
                self._all.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._all = self._all, []
        for client in clients:
            client.close()


def migration_files() -> list[Traversable]:
    """The migration files, in the order they apply."""
    files = [item for item in resources.files(MIGRATIONS_PACKAGE).iterdir() if _MIGRATION_NAME.match(item.name)]
    return sorted(files, key=lambda item: item.name)


def migrations() -> list[tuple[int, str, list[str]]]:
    found = []
    for item in migration_files():
        match = _MIGRATION_NAME.match(item.name)
        assert match is not None
        text = item.read_text(encoding="utf-8")
        statements = [s.strip() for s in _strip_comments(text).split(";") if s.strip()]
        found.append((int(match.group(1)), item.name, statements))
    return found


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


_SCHEMA_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS abacus.schema_migrations "
    "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
    "ENGINE = ReplacingMergeTree ORDER BY version"
)


def migration_statements(statements: list[str], cluster: str = "") -> list[str]:
    """The statements as run: unchanged on one server, in their cluster form on a cluster."""
    if not cluster:
        return statements
    from shared.clickhouse_cluster import render

    return [rendered for statement in statements for rendered in render(statement, cluster)]


def migrate(
    client: Client, analyst_role: list[str] | None = None, cluster: str = "", retention_days: int | None = None
) -> list[str]:
    """Apply the migrations not yet recorded; every statement is idempotent, so two processes
    migrating at once, or a crash between a statement and its record, do no harm. On a server,
    ``analyst_role`` (from shared.analyst_role) is applied after them, on every run, and so is
    ``retention_days`` (ABACUS_RETENTION_DAYS) as the events' TTL when given. ``cluster``
    (ABACUS_CLICKHOUSE_CLUSTER): create everything ON CLUSTER, replicated and distributed."""
    for statement in migration_statements(["CREATE DATABASE IF NOT EXISTS abacus", _SCHEMA_MIGRATIONS], cluster):
        client.command(statement)
    applied = {row[0] for row in client.query("SELECT version FROM abacus.schema_migrations").result_rows}
    done = []
    for version, name, statements in migrations():
        if version in applied:
            continue
        for statement in migration_statements(statements, cluster):
            client.command(statement)
        client.insert("abacus.schema_migrations", [[version, name]], column_names=["version", "name"])
        log.info("applied ClickHouse migration %s", name)
        done.append(name)
    if retention_days is not None:
        from shared.retention import apply_retention

        if changed := apply_retention(client, retention_days, cluster):
            done.append(changed)
    if analyst_role:
        from shared.analyst_role import apply_analyst_role

        apply_analyst_role(client, analyst_role)
    return done
