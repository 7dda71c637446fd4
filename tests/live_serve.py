"""A real `abacus serve` process on a free port, for tests that talk to it as a browser or a
client on another machine would: over TCP, with its own data dir, embedded Valkey and chDB."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServe:
    """`abacus serve` started in a child process; `stop()` sends SIGTERM and waits for a clean exit."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # The tests' own ABACUS_ variables (an external test Redis, say) are not serve's to see.
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("ABACUS_")}
        child_env["ABACUS_BATCH_WAIT_MS"] = "100"
        child_env.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "serve", "--port", str(self.port), "--data-dir", str(data_dir)],
            cwd=REPO,
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited: {self.process.stdout.read().decode()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.process.kill()
        raise AssertionError(f"serve did not become ready in {timeout:.0f} s")

    def token(self, role: str = "admin", sub: str = "tester@example.com") -> str:
        out = subprocess.run(
            [sys.executable, "-m", "shared.cli", "token", "--data-dir", str(self.data_dir), "--sub", sub, "--role", role],
            cwd=REPO, capture_output=True, text=True, check=True,
        )
        return out.stdout.strip()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise AssertionError("serve did not stop within 30 s of SIGTERM") from None
        return self.process.returncode
