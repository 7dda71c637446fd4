"""The schema on a ClickHouse cluster (ABACUS_CLICKHOUSE_CLUSTER): the single-server migrations
(shared/clickhouse_schema/*.sql) rendered into their cluster form, statement by statement.

- Tables of events and sessions become ``<name>_local`` tables, ``ON CLUSTER``, with the
  ``Replicated`` form of their engine, and a ``Distributed`` table named as before over them,
  sharded by ``cityHash64(experiment_key, session_id)``: a session's events, and every copy of
  one event, land on one shard, so ReplacingMergeTree's deduplication (FINAL) and every
  per-session GROUP BY are exact on each shard alone.
- The rollup's per-minute totals are additive (signed differences summed), so any shard may hold
  any row; they are sharded by ``(experiment_key, variant_key)``.
- The registry's version tables and the migration record are small and read whole: replicated
  to every node (one replication path for the whole cluster), not sharded.

Queries keep their single-server text; the session settings in ``QUERY_SETTINGS`` keep them
exact and local where the sharding key allows (see README, "Operating at scale").
"""

from __future__ import annotations

import re

SESSION_KEY = "cityHash64(experiment_key, session_id)"
SHARDED = {
    "events": SESSION_KEY,
    "rollup_events": SESSION_KEY,
    "rollup_sessions": SESSION_KEY,
    "rollup_totals": "cityHash64(experiment_key, variant_key)",
    "rollup_day_totals": "cityHash64(experiment_key, variant_key)",
    "rollup_cohort_totals": "cityHash64(experiment_key, variant_key)",
}
"""Table (in database abacus) -> the sharding key of its Distributed table."""
REPLICATED = ("experiment_versions", "settings_versions", "schema_migrations", "erasure_audit")
"""Tables every node holds whole (the erasure audit is a few rows per request, read by admins)."""

QUERY_SETTINGS = {
    # An IN / JOIN subquery over abacus.events inside a query over it reads each shard's local
    # table: exact, as the rows it matches (one session's) are on the same shard.
    "distributed_product_mode": "local",
    # A GROUP BY that contains the sharding key's columns (per session) is complete on each
    # shard: skip merging its groups on the initiator.
    "optimize_distributed_group_by_sharding_key": 1,
    # An insert returns once every shard stored its part: a worker acknowledges a batch only
    # after that, and the roller reads back what was just stored.
    "insert_distributed_sync": 1,
}

_CREATE = re.compile(
    r"^CREATE TABLE IF NOT EXISTS abacus\.(?P<name>\w+)\s*\((?P<columns>.*)\)\s*"
    r"ENGINE\s*=\s*(?P<engine>\w+)(?:\((?P<args>[^)]*)\))?\s*(?P<rest>.*)$",
    re.DOTALL,
)
_DROP = re.compile(r"^DROP TABLE IF EXISTS abacus\.(?P<name>\w+)$")


class UnknownStatement(ValueError):
    """A migration statement this module does not know how to put on a cluster."""


def render(statement: str, cluster: str) -> list[str]:
    """The cluster statements for one single-server migration statement."""
    statement = statement.strip()
    on = f"ON CLUSTER {quote(cluster)}"
    if statement == "CREATE DATABASE IF NOT EXISTS abacus":
        return [f"CREATE DATABASE IF NOT EXISTS abacus {on}"]
    dropped = _DROP.match(statement)
    if dropped:
        name = dropped["name"]
        drops = [f"DROP TABLE IF EXISTS abacus.{name} {on} SYNC"]
        return drops + ([f"DROP TABLE IF EXISTS abacus.{name}_local {on} SYNC"] if name in SHARDED else [])
    created = _CREATE.match(statement)
    if not created:
        raise UnknownStatement(f"no cluster form for: {statement[:80]}")
    name, columns, engine, args, rest = created["name"], created["columns"], created["engine"], created["args"], created["rest"]
    rest = rest.replace("non_replicated_deduplication_window", "replicated_deduplication_window")
    if name in SHARDED:
        path = f"'/clickhouse/tables/{{shard}}/abacus/{name}_local'"
        local = f"abacus.{name}_local"
        return [
            f"CREATE TABLE IF NOT EXISTS {local} {on} ({columns}) ENGINE = {_replicated(engine, path, args)} {rest}".strip(),
            f"CREATE TABLE IF NOT EXISTS abacus.{name} {on} AS {local} "
            f"ENGINE = Distributed({quote(cluster)}, abacus, {name}_local, {SHARDED[name]})",
        ]
    if name in REPLICATED:
        path = f"'/clickhouse/tables/all/abacus/{name}'"
        return [
            f"CREATE TABLE IF NOT EXISTS abacus.{name} {on} ({columns}) ENGINE = {_replicated(engine, path, args)} {rest}".strip()
        ]
    raise UnknownStatement(f"abacus.{name} is neither sharded nor replicated: add it to SHARDED or REPLICATED")


def _replicated(engine: str, path: str, args: str | None) -> str:
    if not engine.endswith("MergeTree"):
        raise UnknownStatement(f"engine {engine} has no Replicated form")
    extra = f", {args.strip()}" if args and args.strip() else ""
    return f"Replicated{engine}({path}, '{{replica}}'{extra})"


def quote(cluster: str) -> str:
    """A cluster name as an identifier (names come from the operator's configuration)."""
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", cluster):
        raise ValueError(f"ABACUS_CLICKHOUSE_CLUSTER={cluster!r} is not a cluster name")
    return f"`{cluster}`" if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", cluster) else cluster


def local_target(table: str, cluster: str) -> str:
    """Where an ALTER or DELETE of ``table``'s rows goes: the table itself on one server; on a
    cluster, its local tables on every node (a Distributed table holds no rows of its own)."""
    return table if not cluster else f"{table}_local ON CLUSTER {quote(cluster)}"


def clear_table(table: str, cluster: str, condition: str | None = None) -> str:
    """TRUNCATE (or DELETE WHERE ``condition``) for ``table``: on a cluster, of its local tables
    on every node, as a Distributed table holds no data of its own."""
    if not cluster:
        return f"TRUNCATE TABLE {table}" if condition is None else f"DELETE FROM {table} WHERE {condition}"
    on = f"ON CLUSTER {quote(cluster)}"
    if condition is None:
        return f"TRUNCATE TABLE {table}_local {on} SYNC"
    return f"DELETE FROM {table}_local {on} WHERE {condition}"
