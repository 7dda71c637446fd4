"""ABACUS_RETENTION_DAYS as a ClickHouse TTL on abacus.events, applied by `abacus migrate` (and
serve's start) after the migrations: ``received_at`` older than that many days is deleted by
ClickHouse's merges. 0 removes the TTL. On a ClickHouse cluster (ABACUS_CLICKHOUSE_CLUSTER) the
TTL belongs to the local tables, ON CLUSTER, as the Distributed abacus.events stores nothing.
Only the DDL lives here; what the rollup keeps after events expire is the README's (Operations)."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from shared.clickhouse_cluster import local_target

EVENTS = "abacus.events"


def retention_sql(days: int, cluster: str = "") -> str:
    """The ALTER that makes the events' TTL ``days`` (0: none)."""
    target = local_target(EVENTS, cluster)
    if days <= 0:
        return f"ALTER TABLE {target} REMOVE TTL"
    return f"ALTER TABLE {target} MODIFY TTL toDateTime(received_at) + INTERVAL {int(days)} DAY"


def current_ttl(client: Client, cluster: str = "") -> str:
    """The TTL clause of the table holding the events (on a cluster: this node's local table)."""
    create = client.command(f"SHOW CREATE TABLE {EVENTS}_local" if cluster else f"SHOW CREATE TABLE {EVENTS}")
    text = create if isinstance(create, str) else "".join(map(str, create))
    for line in text.replace("\\n", "\n").splitlines():
        if line.strip().startswith("TTL "):
            return line.strip()
    return ""


def apply_retention(client: Client, days: int, cluster: str = "") -> str:
    """Make the table's TTL match ``days``; returns what it did (for the migrate output)."""
    has_ttl = bool(current_ttl(client, cluster))
    if days <= 0:
        if not has_ttl:
            return ""
        client.command(retention_sql(0, cluster))
        return "retention: TTL removed from abacus.events"
    # materialize_ttl_after_modify=0: the TTL applies as parts merge, not by rewriting every part now.
    client.command(retention_sql(days, cluster), settings={"materialize_ttl_after_modify": 0})
    return f"retention: abacus.events keeps {int(days)} days"
