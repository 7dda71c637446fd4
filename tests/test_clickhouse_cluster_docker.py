"""The cluster schema on a real ClickHouse cluster: two shards (one replica each) and a Keeper
(embedded in the first server), in Docker. Skipped, with the reason, where no Docker engine
answers, as tests/test_docker_stack.py is. ABACUS_TEST_CLICKHOUSE_IMAGE overrides the image."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import time
import uuid
from pathlib import Path

import pytest

from query_api.results_query import fetch_rollup_totals, fetch_rollups
from shared.clickhouse import ClickHouse, migrate
from tests.helpers import EVENT_COLUMNS
from worker import rollup_store

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

IMAGE = os.environ.get("ABACUS_TEST_CLICKHOUSE_IMAGE", "clickhouse/clickhouse-server:25.8")
CLUSTER = "abacus"
USER, PASSWORD = "abacus", "abacus-test-" + secrets.token_hex(6)

_CONFIG = """<clickhouse>
  <remote_servers><{cluster}>
    <shard><replica><host>ch1</host><port>9000</port><user>{user}</user><password>{password}</password></replica></shard>
    <shard><replica><host>ch2</host><port>9000</port><user>{user}</user><password>{password}</password></replica></shard>
  </{cluster}></remote_servers>
  <zookeeper><node><host>ch1</host><port>9181</port></node></zookeeper>
  <macros><shard>{shard}</shard><replica>{replica}</replica></macros>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
  {keeper}
</clickhouse>"""
_KEEPER = """<keeper_server>
    <tcp_port>9181</tcp_port><server_id>1</server_id>
    <log_storage_path>/var/lib/clickhouse/coordination/log</log_storage_path>
    <snapshot_storage_path>/var/lib/clickhouse/coordination/snapshots</snapshot_storage_path>
    <raft_configuration><server><id>1</id><hostname>ch1</hostname><port>9234</port></server></raft_configuration>
  </keeper_server>"""


@pytest.fixture(scope="module")
def cluster_urls(tmp_path_factory):
    docker = pytest.importorskip("docker", reason="the Docker SDK (docker, via testcontainers) is not installed")
    try:
        engine = docker.from_env(timeout=10)
        engine.ping()
    except Exception as exc:  # DockerException, ConnectionError, a missing socket, ...
        pytest.skip(f"no Docker engine answers ({type(exc).__name__}: {exc})")
    network = engine.networks.create(f"abacus-ch-{uuid.uuid4().hex[:8]}")
    containers = []
    try:
        for index, name in enumerate(("ch1", "ch2"), start=1):
            config_dir: Path = tmp_path_factory.mktemp(name)
            (config_dir / "cluster.xml").write_text(
                _CONFIG.format(
                    cluster=CLUSTER,
                    user=USER,
                    password=PASSWORD,
                    shard=f"0{index}",
                    replica=name,
                    keeper=_KEEPER if index == 1 else "",
                )
            )
            containers.append(
                engine.containers.run(
                    IMAGE,
                    name=f"{network.name}-{name}",
                    hostname=name,
                    detach=True,
                    network=network.name,
                    environment={
                        "CLICKHOUSE_USER": USER,
                        "CLICKHOUSE_PASSWORD": PASSWORD,
                        "CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT": "1",
                    },
                    volumes={
                        str(config_dir / "cluster.xml"): {"bind": "/etc/clickhouse-server/config.d/cluster.xml", "mode": "ro"}
                    },
                    ports={"8123/tcp": None},
                    ulimits=[docker.types.Ulimit(name="nofile", soft=262144, hard=262144)],
                )
            )
        urls = []
        for container in containers:
            container.reload()
            port = container.attrs["NetworkSettings"]["Ports"]["8123/tcp"][0]["HostPort"]
            urls.append(f"http://{USER}:{PASSWORD}@127.0.0.1:{port}")
        _wait_ready(urls)
        yield urls
    finally:
        for container in containers:
            container.remove(force=True)
        network.remove()
        engine.close()


def _wait_ready(urls: list[str], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    for url in urls:
        while True:
            try:
                clickhouse = ClickHouse(url)
                # Keeper answers too: the cluster's DDL queue lives there.
                clickhouse.client().query("SELECT count() FROM system.zookeeper WHERE path = '/'")
                clickhouse.close()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)


def _event(i: int, session: int, variant: str, event_type: str, event_id: str) -> list:
    received = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=i)
    return [event_id, "exp", variant, f"s{session}", event_type, "/", None, "{}", None, received]


def test_two_shards_hold_the_events_and_every_query_stays_exact(cluster_urls):
    first, second = (ClickHouse(url, CLUSTER) for url in cluster_urls)
    try:
        migrate(first.client(), cluster=CLUSTER)
        assert migrate(second.client(), cluster=CLUSTER) == [], "the migration record is replicated to every node"
        rows = []
        for session in range(200):
            variant = ("control", "treatment")[session % 2]
            rows.append(_event(2 * session, session, variant, "impression", f"i{session}"))
            if session % 3 == 0:
                rows.append(_event(2 * session + 1, session, variant, "conversion", f"c{session}"))
        client = first.client()
        client.insert("abacus.events", rows, column_names=EVENT_COLUMNS)
        # Every copy of an event again, in another insert: it lands on the same shard as the first.
        client.insert("abacus.events", rows[:50], column_names=EVENT_COLUMNS, settings={"insert_deduplicate": 0})
        local_counts = [
            ClickHouse(url).client().query("SELECT count() FROM abacus.events_local FINAL").result_rows[0][0]
            for url in cluster_urls
        ]
        assert all(local_counts) and sum(local_counts) == len(rows), local_counts
        assert second.client().query("SELECT count() FROM abacus.events FINAL").result_rows[0][0] == len(rows)
        raw = fetch_rollups(second.client(), ["exp"], None, None)
        assert raw[("exp", "control")].impressions == 100 and raw[("exp", "treatment")].impressions == 100
        assert raw[("exp", "control")].exposed_converted == sum(1 for s in range(0, 200, 2) if s % 3 == 0)
        window = fetch_rollups(
            second.client(),
            ["exp"],
            dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc),
            dt.datetime(2026, 5, 2, tzinfo=dt.timezone.utc),
        )
        assert {k: v.exposed_sessions for k, v in window.items()} == {k: v.exposed_sessions for k, v in raw.items()}
        rollup_store.rebuild_from_events(first.client(), cluster=CLUSTER)
        rolled = fetch_rollup_totals(second.client(), ["exp"], None, None)
        assert {k: (v.impressions, v.exposed_converted, v.unique_sessions) for k, v in rolled.items()} == {
            k: (v.impressions, v.exposed_converted, v.unique_sessions) for k, v in raw.items()
        }
    finally:
        first.close()
        second.close()


def test_retention_and_erase_reach_the_local_tables_of_every_shard(cluster_urls):
    from jobs.erase import erase_statements
    from shared.retention import apply_retention, current_ttl

    first, second = (ClickHouse(url, CLUSTER) for url in cluster_urls)
    nodes = [ClickHouse(url) for url in cluster_urls]
    try:
        migrate(first.client(), cluster=CLUSTER, retention_days=30)
        assert [current_ttl(node.client(), CLUSTER) for node in nodes] == ["TTL toDateTime(received_at) + toIntervalDay(30)"] * 2
        rows = [
            [
                f"erase-{s}-{i}",
                "erase-exp",
                "control",
                f"es{s}",
                "impression",
                "/",
                None,
                "{}",
                None,
                dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc),
            ]
            for s in range(20)
            for i in range(3)
        ]
        first.client().insert("abacus.events", rows, column_names=EVENT_COLUMNS)

        def count(where: str) -> int:
            return (
                second.client()
                .query(f"SELECT count() FROM abacus.events FINAL WHERE experiment_key = 'erase-exp' AND {where}")
                .result_rows[0][0]
            )

        assert count("session_id = 'es7'") == 3
        for statement in erase_statements(CLUSTER):
            first.client().command(statement, parameters={"session_id": "es7"}, settings={"mutations_sync": 2})
        assert count("session_id = 'es7'") == 0 and count("1") == 57
        apply_retention(first.client(), 0, CLUSTER)
        assert [current_ttl(node.client(), CLUSTER) for node in nodes] == ["", ""]
    finally:
        for each in (first, second, *nodes):
            each.close()
