"""The schema's cluster form (ABACUS_CLICKHOUSE_CLUSTER), rendered from the real migrations and
checked statement by statement; a Docker test runs it on a real two-shard cluster."""

from __future__ import annotations

import re

import pytest

from shared.clickhouse import _SCHEMA_MIGRATIONS, connect, migration_statements, migrations
from shared.clickhouse_cluster import (
    QUERY_SETTINGS,
    REPLICATED,
    SESSION_KEY,
    SHARDED,
    UnknownStatement,
    clear_table,
    quote,
    render,
)

CLUSTER = "abacus_cluster"


def all_rendered() -> list[str]:
    statements = ["CREATE DATABASE IF NOT EXISTS abacus", _SCHEMA_MIGRATIONS]
    for _, _, migration in migrations():
        statements += migration
    return migration_statements(statements, CLUSTER)


def single_server_columns() -> dict[str, str]:
    found = {}
    for _, _, migration in migrations():
        for statement in migration:
            match = re.match(r"CREATE TABLE IF NOT EXISTS abacus\.(\w+)\s*\((.*)\)\s*ENGINE", statement, re.DOTALL)
            if match:
                found[match[1]] = match[2]
    return found


def test_every_statement_runs_on_the_whole_cluster():
    rendered = all_rendered()
    assert rendered
    for statement in rendered:
        assert f" ON CLUSTER {CLUSTER} " in statement + " ", statement


def test_every_table_is_replicated_or_distributed_with_its_macros():
    for statement in all_rendered():
        if not statement.startswith("CREATE TABLE"):
            continue
        engine = re.search(r"ENGINE = (\w+)\((.*?)\)( |$)", statement, re.DOTALL)
        assert engine, statement
        name = re.match(r"CREATE TABLE IF NOT EXISTS abacus\.(\w+)", statement)[1]
        if engine[1] == "Distributed":
            base = name
            assert base in SHARDED, statement
            assert engine[2] == f"{CLUSTER}, abacus, {base}_local, {SHARDED[base]}"
            assert f" AS abacus.{base}_local " in statement
        else:
            assert engine[1].startswith("Replicated") and engine[1].endswith("MergeTree"), statement
            if name.endswith("_local"):
                assert f"'/clickhouse/tables/{{shard}}/abacus/{name}', '{{replica}}'" in engine[2]
            else:
                assert name in REPLICATED, f"{name} is replicated whole, so it must be listed as such"
                assert f"'/clickhouse/tables/all/abacus/{name}', '{{replica}}'" in engine[2]
        assert "non_replicated_deduplication_window" not in statement


def test_events_and_sessions_are_sharded_by_session_so_duplicates_meet_on_one_shard():
    rendered = " ".join(all_rendered())
    for table in ("events", "rollup_events"):
        assert f"Distributed({CLUSTER}, abacus, {table}_local, {SESSION_KEY})" in rendered
    assert SESSION_KEY == "cityHash64(experiment_key, session_id)"
    # abacus.events deduplicates on a key that holds both sharding columns: copies of one event
    # always hash to one shard, so FINAL on each shard is exact.
    events_local = next(s for s in all_rendered() if s.startswith("CREATE TABLE IF NOT EXISTS abacus.events_local"))
    assert "ORDER BY (experiment_key, variant_key, session_id, event_id)" in events_local
    assert "ReplicatedReplacingMergeTree(" in events_local
    assert "replicated_deduplication_window = 10000" in events_local


def test_local_tables_keep_the_single_server_columns_and_engine_arguments():
    columns = single_server_columns()
    rendered = all_rendered()
    for table, body in columns.items():
        target = f"abacus.{table}_local" if table in SHARDED else f"abacus.{table}"
        # The last creation: a table a later migration drops and creates again has its new columns.
        statement = next(s for s in reversed(rendered) if s.startswith(f"CREATE TABLE IF NOT EXISTS {target} "))
        assert f"({body})" in statement
    sessions = next(s for s in rendered if s.startswith("CREATE TABLE IF NOT EXISTS abacus.rollup_sessions_local"))
    assert "'{replica}', version)" in sessions  # ReplacingMergeTree(version) keeps its version column


def test_dropped_tables_go_with_their_local_tables():
    rendered = all_rendered()
    assert f"DROP TABLE IF EXISTS abacus.rollup_totals ON CLUSTER {CLUSTER} SYNC" in rendered
    assert f"DROP TABLE IF EXISTS abacus.rollup_totals_local ON CLUSTER {CLUSTER} SYNC" in rendered


def test_single_server_statements_are_unchanged():
    statements = [s for _, _, m in migrations() for s in m]
    assert migration_statements(statements, "") == statements


def test_unknown_statements_and_bad_cluster_names_are_refused():
    with pytest.raises(UnknownStatement):
        render("CREATE TABLE IF NOT EXISTS abacus.new_table (a String) ENGINE = MergeTree ORDER BY a", CLUSTER)
    with pytest.raises(UnknownStatement):
        render("ALTER TABLE abacus.events ADD COLUMN x String", CLUSTER)
    with pytest.raises(ValueError):
        quote("c1; DROP DATABASE abacus")
    assert quote("my-cluster") == "`my-cluster`"


def test_rollup_rebuild_clears_the_local_tables_on_every_node():
    assert clear_table("abacus.rollup_events", "") == "TRUNCATE TABLE abacus.rollup_events"
    assert clear_table("abacus.rollup_events", CLUSTER) == f"TRUNCATE TABLE abacus.rollup_events_local ON CLUSTER {CLUSTER} SYNC"
    assert clear_table("abacus.rollup_cohort_totals", CLUSTER, "x = 1") == (
        f"DELETE FROM abacus.rollup_cohort_totals_local ON CLUSTER {CLUSTER} WHERE x = 1"
    )


def test_the_query_settings_keep_subqueries_local_and_inserts_synchronous():
    assert QUERY_SETTINGS["distributed_product_mode"] == "local"
    assert QUERY_SETTINGS["insert_distributed_sync"] == 1


def test_the_embedded_chdb_refuses_a_cluster(tmp_path):
    with pytest.raises(ValueError, match="ABACUS_CLICKHOUSE_CLUSTER"):
        connect(f"chdb://{tmp_path}", CLUSTER)


def test_retention_and_erase_act_on_the_local_tables_on_a_cluster():
    from jobs.erase import erase_statements
    from shared.retention import retention_sql

    ttl = "MODIFY TTL toDateTime(received_at) + INTERVAL 30 DAY"
    assert retention_sql(30) == f"ALTER TABLE abacus.events {ttl}"
    assert retention_sql(0) == "ALTER TABLE abacus.events REMOVE TTL"
    assert retention_sql(30, CLUSTER) == f"ALTER TABLE abacus.events_local ON CLUSTER {CLUSTER} {ttl}"
    assert retention_sql(0, CLUSTER) == f"ALTER TABLE abacus.events_local ON CLUSTER {CLUSTER} REMOVE TTL"
    where = "WHERE session_id = {session_id:String}"
    assert erase_statements() == [f"DELETE FROM abacus.events {where}", f"DELETE FROM abacus.rollup_events {where}"]
    assert erase_statements(CLUSTER) == [
        f"DELETE FROM abacus.events_local ON CLUSTER {CLUSTER} {where}",
        f"DELETE FROM abacus.rollup_events_local ON CLUSTER {CLUSTER} {where}",
    ]
    # Every table they touch is sharded: a *_local table exists for it on every node.
    rendered = " ".join(all_rendered())
    for table in ("events", "rollup_events"):
        assert table in SHARDED and f"CREATE TABLE IF NOT EXISTS abacus.{table}_local ON CLUSTER {CLUSTER}" in rendered


def test_the_cluster_forms_of_retention_and_erase_are_valid_clickhouse_sql(clickhouse):
    from jobs.erase import erase_statements
    from shared.retention import retention_sql

    client = clickhouse.client()
    for statement in [retention_sql(30, CLUSTER), retention_sql(0, CLUSTER), *erase_statements(CLUSTER)]:
        # The parser's verdict (chDB cannot run ON CLUSTER, but parses it as a server does).
        ast = client.command(f"EXPLAIN AST {statement}", parameters={"session_id": "s-1"})
        assert "_local" in str(ast), ast
    with pytest.raises(Exception, match="Syntax error"):
        client.command(f"EXPLAIN AST {retention_sql(30, CLUSTER).replace('ON CLUSTER', 'ON CLUSTR')}")
