"""ABACUS_RETENTION_DAYS as a ClickHouse TTL on abacus.events, applied by `abacus migrate` (and
serve's start) after the migrations: ``received_at`` older than that many days is deleted by
ClickHouse's merges. 0 removes the TTL. Only the DDL lives here; what the rollup keeps after
events expire is the README's (Operations)."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

EVENTS = "abacus.events"


def current_ttl(client: Client) -> str:
    create = client.command(f"SHOW CREATE TABLE {EVENTS}")
    text = create if isinstance(create, str) else "".join(map(str, create))
    for line in text.replace("\\n", "\n").splitlines():
        if line.strip().startswith("TTL "):
            return line.strip()
    return ""


def apply_retention(client: Client, days: int) -> str:
    """Make the table's TTL match ``days``; returns what it did (for the migrate output)."""
    has_ttl = bool(current_ttl(client))
    if days <= 0:
        if not has_ttl:
            return ""
        client.command(f"ALTER TABLE {EVENTS} REMOVE TTL")
        return "retention: TTL removed from abacus.events"
    # materialize_ttl_after_modify=0: the TTL applies as parts merge, not by rewriting every part now.
    client.command(
        f"ALTER TABLE {EVENTS} MODIFY TTL toDateTime(received_at) + INTERVAL {int(days)} DAY",
        settings={"materialize_ttl_after_modify": 0},
    )
    return f"retention: abacus.events keeps {int(days)} days"
