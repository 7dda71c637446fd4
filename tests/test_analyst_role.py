"""The read-only analyst role of a ClickHouse server deployment: its statements rendered here,
and applied to a real server under testcontainers (skipped where no Docker engine answers)."""

from __future__ import annotations

import clickhouse_connect
import pytest

from shared.analyst_role import PROFILE, ROLE, USER, analyst_role_sql
from shared.clickhouse import migrate

CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:25.8"


def test_role_grants_select_on_abacus_only_with_fixed_limits():
    statements = analyst_role_sql(None, 30, 1000, 10**9)
    assert f"GRANT SELECT ON abacus.* TO {ROLE}" in statements
    assert not any("INSERT" in s or "ALTER ON" in s or "ON *.* TO" in s for s in statements)
    profile = next(s for s in statements if s.startswith("CREATE SETTINGS PROFILE"))
    for setting in (
        "readonly = 1 READONLY",
        "max_execution_time = 30 READONLY",
        "max_result_rows = 1000 READONLY",
        "max_memory_usage = 1000000000 READONLY",
    ):
        assert setting in profile
    assert not any(USER in s for s in statements)  # no password, no login user


def test_the_user_gets_a_password_hash_never_the_password():
    statements = analyst_role_sql("s3cret'; DROP", 30, 1000, 10**9)
    joined = "\n".join(statements)
    assert "s3cret" not in joined and "DROP" not in joined
    assert f"GRANT {ROLE} TO {USER}" in statements and PROFILE in joined


@pytest.mark.docker
def test_the_analyst_user_reads_abacus_and_can_write_nothing():
    docker = pytest.importorskip("docker", reason="the Docker SDK (docker, via testcontainers) is not installed")
    pytest.importorskip("testcontainers", reason="testcontainers is not installed")
    try:
        docker.from_env().ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no engine to test against
        pytest.skip(f"no Docker engine answers ({type(exc).__name__}: {exc})")
    from testcontainers.community.clickhouse import ClickHouseContainer

    container = ClickHouseContainer(CLICKHOUSE_IMAGE, username="abacus", password="abacus", dbname="default")
    container.with_env("CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT", "1")
    with container:
        host, port = container.get_container_host_ip(), int(container.get_exposed_port(8123))
        admin = clickhouse_connect.get_client(host=host, port=port, username="abacus", password="abacus")
        migrate(admin, analyst_role_sql("analyst-pass", 5, 100, 10**9))
        migrate(admin, analyst_role_sql("analyst-pass", 5, 100, 10**9))  # idempotent
        analyst = clickhouse_connect.get_client(host=host, port=port, username=USER, password="analyst-pass")
        assert analyst.query("SELECT count() FROM abacus.events").result_rows == [(0,)]
        for statement in (
            "INSERT INTO abacus.events (event_id) VALUES ('x')",
            "DROP TABLE abacus.events",
            "SELECT 1 SETTINGS readonly = 0",
        ):
            with pytest.raises(Exception, match="(?i)readonly|not enough privileges|cannot modify"):
                analyst.command(statement)
        with pytest.raises(Exception, match="(?i)not enough privileges|ACCESS_DENIED"):
            analyst.query("SELECT count() FROM system.users")
        with pytest.raises(Exception, match="TIMEOUT_EXCEEDED|Timeout exceeded"):
            analyst.query("SELECT count() FROM numbers_mt(1000000000000)")
