"""Abacus on a real Valkey Cluster (three primaries, three replicas) with three stream shards:
beacons through ingest, two workers and the roller, exact results, and a primary's planned
failover, or its crash with ABACUS_REDIS_WAIT_REPLICAS=1, in the middle of the traffic losing no
beacon that was answered 202."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import Counter

import pytest
import redis
from litestar.testing import TestClient
from redis.cluster import RedisCluster
from redis.crc import key_slot

from ingest.app import create_app as create_ingest_app
from query_api.registry_seed import find_seed, load_seed
from query_api.registry_store import RegistryStore
from query_api.results_query import fetch_rollup_totals, fetch_rollups
from shared import redis_keys
from shared.clickhouse import ClickHouse
from shared.redis_conn import sync_client_for
from tests.conftest import wait_for
from tests.helpers import BROWSER_UA, beacon
from tests.valkey_cluster import ValkeyCluster
from worker.main import build_roller, build_workers

EXPERIMENT = "homepage_hero_test"
VARIANTS = ("control", "tiny_gang_social_proof")


@pytest.fixture(scope="module")
def valkey_cluster():
    cluster = ValkeyCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture()
def cluster_settings(settings, valkey_cluster):
    client = RedisCluster.from_url(valkey_cluster.url)
    for node in client.get_primaries():
        client.flushall(target_nodes=node)
    client.close()
    return dataclasses.replace(
        settings, redis_url=valkey_cluster.url, redis_cluster=True, stream_shards=3, batch_size=40, batch_wait_ms=100
    )


def test_every_key_of_a_stream_shard_shares_one_slot_and_the_lock_script_one_slot_too():
    for shard in redis_keys.stream_shards("abacus:events", "abacus:events:dead", 3):
        keys = [
            shard.stream,
            shard.dead_letter,
            shard.rollup_step(1, 4),
        ]
        assert len({key_slot(key.encode()) for key in keys}) == 1, keys
    lock, alive = (redis_keys.rollup_share_key(name, 2, 4, tagged=True) for name in ("lock", "alive"))
    assert key_slot(lock.encode()) == key_slot(alive.encode())
    # The untagged single stream keeps the names existing deployments have data under.
    (single,) = redis_keys.stream_shards("abacus:events", "abacus:events:dead", 1)
    assert (single.stream, single.dead_letter) == ("abacus:events", "abacus:events:dead")


def test_sessions_spread_over_the_shards_and_a_session_keeps_its_shard():
    counts = Counter(redis_keys.session_shard(f"session_{i}", 3) for i in range(3000))
    assert set(counts) == {0, 1, 2} and min(counts.values()) > 800
    assert all(redis_keys.session_shard("s-42", 3) == redis_keys.session_shard("s-42", 3) for _ in range(3))


def _seed_registry(settings, clickhouse) -> None:
    client = sync_client_for(settings)
    RegistryStore(clickhouse, client).load(load_seed(find_seed(settings.registry_seed)))
    client.close()


def _ingest(settings) -> TestClient:
    client = TestClient(app=create_ingest_app(settings), raise_server_exceptions=False)  # type: ignore[arg-type]
    client.headers["user-agent"] = BROWSER_UA
    return client


def _beacons(start: int, count: int) -> list[dict]:
    """Sessions each in one variant, an impression then a click, every beacon with its own event_id."""
    out = []
    for i in range(start, start + count):
        session = i // 2
        event = "impression" if i % 2 == 0 else "cta_click"
        out.append(beacon(session_id=f"s{session}", variant_key=VARIANTS[session % 2], event_name=event, event_id=f"ev{i}"))
    return out


class Pipeline:
    """Two worker processes' loops (one per stream shard each) and a roller, in threads."""

    def __init__(self, settings, clickhouse) -> None:
        self.workers = build_workers(settings, clickhouse, "w1") + build_workers(settings, clickhouse, "w2")
        self.roller = build_roller(settings, clickhouse)
        self.threads = [threading.Thread(target=w.run, daemon=True) for w in self.workers]
        self.threads.append(threading.Thread(target=self.roller.run, daemon=True))

    def __enter__(self) -> Pipeline:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for worker in self.workers:
            worker.request_stop()
        self.roller.request_stop()
        for thread in self.threads:
            thread.join(30)


def _stored_event_ids(clickhouse) -> set[str]:
    return {row[0] for row in clickhouse.client().query("SELECT DISTINCT event_id FROM abacus.events").result_rows}


def _expected(accepted: list[dict]) -> dict[str, tuple[int, int, int]]:
    """Per variant: (impressions, cta clicks, sessions), from the beacons that got a 202."""
    expected = {}
    for variant in VARIANTS:
        mine = [b for b in accepted if b["variant_key"] == variant]
        expected[variant] = (
            sum(b["event_name"] == "impression" for b in mine),
            sum(b["event_name"] == "cta_click" for b in mine),
            len({b["session_id"] for b in mine}),
        )
    return expected


def _assert_results_exact(clickhouse, accepted: list[dict]) -> None:
    client = clickhouse.client()
    expected = _expected(accepted)
    for totals in (fetch_rollups(client, [EXPERIMENT], None, None), fetch_rollup_totals(client, [EXPERIMENT], None, None)):
        got = {v: (t.impressions, t.cta_clicks, t.unique_sessions) for (e, v), t in totals.items() if e == EXPERIMENT}
        assert got == expected


def _wait_rolled(pipeline: Pipeline, clickhouse, accepted: list[dict]) -> None:
    def caught_up() -> bool:
        got = fetch_rollup_totals(clickhouse.client(), [EXPERIMENT], None, None)
        return {v: (t.impressions, t.cta_clicks, t.unique_sessions) for (_, v), t in got.items()} == _expected(accepted)

    wait_for(caught_up, timeout=60)


def test_beacons_through_ingest_two_workers_and_the_roller_on_three_shards(cluster_settings, clean_clickhouse, valkey_cluster):
    _seed_registry(cluster_settings, clean_clickhouse)
    sent = _beacons(0, 400)
    with _ingest(cluster_settings) as ingest:
        for single in sent[:100]:
            assert ingest.post("/api/experiments/event", json=single).status_code == 202
        for i in range(100, 400, 50):
            assert ingest.post("/api/experiments/batch", json=sent[i : i + 50]).status_code == 202
    client = RedisCluster.from_url(valkey_cluster.url)
    lengths = [client.xlen(shard.stream) for shard in redis_keys.stream_layout(cluster_settings)]
    client.close()
    assert all(lengths), f"every shard holds entries: {lengths}"
    with Pipeline(cluster_settings, clean_clickhouse) as pipeline:
        wait_for(lambda: len(_stored_event_ids(clean_clickhouse)) == 400, timeout=60)
        _wait_rolled(pipeline, clean_clickhouse, sent)
    assert _stored_event_ids(clean_clickhouse) == {b["event_id"] for b in sent}
    count = clean_clickhouse.client().query("SELECT count() FROM abacus.events FINAL").result_rows[0][0]
    assert count == 400
    _assert_results_exact(clean_clickhouse, sent)
    # Each worker loop stored only its own shard: both processes shared the work of some shard.
    assert sum(w.inserted_rows for w in pipeline.workers) >= 400


class _Traffic:
    """Batches of 10 beacons sent one after another; what got a 202 and how many got a 503."""

    def __init__(self, ingest) -> None:  # type: ignore[no-untyped-def]
        self.ingest = ingest
        self.accepted: list[dict] = []
        self.refused = 0
        self._numbers = itertools.count()

    def send(self, seconds: float) -> int:
        """Send for ``seconds``; the batches answered 202."""
        got = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = _beacons(next(self._numbers) * 10, 10)
            response = self.ingest.post("/api/experiments/batch", json=batch)
            if response.status_code == 202:
                self.accepted.extend(batch)
                got += 1
            else:
                assert response.status_code == 503, response.text
                assert response.headers.get("retry-after"), "a 503 says when to retry"
                self.refused += 1
        return got

    def stored_once_rolled(self, pipeline, clickhouse: ClickHouse) -> tuple[set[str], list[dict]]:  # type: ignore[no-untyped-def]
        """Wait until every 202'd beacon is stored and the rollup has folded what is stored:
        (the 202'd event ids, every sent beacon that is stored)."""
        wanted = {b["event_id"] for b in self.accepted}
        wait_for(lambda: wanted <= _stored_event_ids(clickhouse), timeout=90)
        # Beyond the 202s, only a batch answered 503 whose append landed anyway may be stored.
        sent = _beacons(0, 10 * next(self._numbers))
        stored_beacons = [b for b in sent if b["event_id"] in _stored_event_ids(clickhouse)]
        _wait_rolled(pipeline, clickhouse, stored_beacons)
        return wanted, stored_beacons


def test_a_primary_failing_over_mid_traffic_loses_no_accepted_beacon(cluster_settings, clean_clickhouse, valkey_cluster):
    _seed_registry(cluster_settings, clean_clickhouse)
    shard0 = redis_keys.stream_layout(cluster_settings)[0].stream
    old_primary = valkey_cluster.primary_of_key(shard0)
    replica = valkey_cluster.replica_of(old_primary)
    with _ingest(cluster_settings) as ingest, Pipeline(cluster_settings, clean_clickhouse) as pipeline:
        traffic = _Traffic(ingest)
        traffic.send(1.0)
        # The replica takes over (after catching up with its primary), then the old primary dies.
        redis.Redis(port=replica).execute_command("CLUSTER", "FAILOVER")
        traffic.send(1.0)
        wait_for(lambda: valkey_cluster.role_of(replica) == "master", timeout=20)
        valkey_cluster.kill(old_primary)
        traffic.send(3.0)
        assert valkey_cluster.primary_of_key(shard0) == replica
        assert traffic.send(1.0) > 0, "ingest accepts beacons again after the failover"
        wanted, stored_beacons = traffic.stored_once_rolled(pipeline, clean_clickhouse)
    stored = _stored_event_ids(clean_clickhouse)
    assert wanted <= stored
    assert len(stored - wanted) <= traffic.refused * 10
    _assert_results_exact(clean_clickhouse, stored_beacons)


def test_a_primary_crashing_mid_traffic_loses_no_accepted_beacon_with_wait_1(cluster_settings, clean_clickhouse, valkey_cluster):
    """kill -9 of a primary, no planned failover: its replica is promoted by failure detection
    (cluster-node-timeout 1 s). Without WAIT the appends acknowledged just before the crash may
    not have reached the replica; with WAIT 1 a 202 means the replica had it."""
    valkey_cluster.heal()  # an earlier test may have left a primary without its replica
    settings = dataclasses.replace(cluster_settings, redis_wait_replicas=1, redis_wait_timeout_ms=1000)
    _seed_registry(settings, clean_clickhouse)
    shard0 = redis_keys.stream_layout(settings)[0].stream
    old_primary = valkey_cluster.primary_of_key(shard0)
    replica = valkey_cluster.replica_of(old_primary)
    with _ingest(settings) as ingest, Pipeline(settings, clean_clickhouse) as pipeline:
        traffic = _Traffic(ingest)
        assert traffic.send(1.0) > 0, "ingest accepts with WAIT 1 while every primary has its replica"
        # The crash lands while requests are in flight: the sender never pauses for it.
        crash = threading.Timer(0.5, valkey_cluster.kill, [old_primary])
        crash.start()
        traffic.send(1.0)
        crash.join()
        wait_for(lambda: valkey_cluster.role_of(replica) == "master", timeout=20)
        # The promoted replica has no replica of its own: WAIT 1 refuses its shard's appends
        # (503) until the old primary is back, as its replica. Other shards still accept.
        before = len(traffic.accepted)
        traffic.send(1.0)
        alone = {redis_keys.session_shard(b["session_id"], 3) for b in traffic.accepted[before:]}
        assert 0 not in alone, "no batch touching the replica-less shard was answered 202"
        valkey_cluster.restart(old_primary)
        wait_for(lambda: valkey_cluster.role_of(old_primary) == "slave", timeout=20)
        wait_for(lambda: traffic.send(0.3) > 0, timeout=30)
        assert valkey_cluster.primary_of_key(shard0) == replica
        wanted, stored_beacons = traffic.stored_once_rolled(pipeline, clean_clickhouse)
    assert traffic.refused, "the crash and the replica-less shard were answered 503"
    stored = _stored_event_ids(clean_clickhouse)
    assert wanted <= stored
    # Beyond the 202s, only batches answered 503 whose append landed anyway ("503 means maybe").
    assert len(stored - wanted) <= traffic.refused * 10
    count = clean_clickhouse.client().query("SELECT count() FROM abacus.events FINAL").result_rows[0][0]
    assert count == len(stored), "every stored beacon once"
    _assert_results_exact(clean_clickhouse, stored_beacons)
