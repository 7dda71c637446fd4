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


def start_serve(data_dir: Path, port: int, settings: dict[str, str] | None = None, timeout: float = 60.0) -> subprocess.Popen:
    """serve in a child process, returned once /readyz answers 200; its output is in a file beside
    the data dir (``serve_output``): a pipe nobody reads fills up and then blocks serve's logging."""
    # The tests' own ABACUS_ variables (an external test Redis, say) are not serve's to see.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABACUS_")}
    env["ABACUS_BATCH_WAIT_MS"] = "100"
    env.update(settings or {})
    log_path = data_dir.parent / f"serve-{port}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "abacus.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    process.log_path = log_path  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {serve_output(process)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"serve did not become ready in {timeout:.0f} s")


def serve_output(process: subprocess.Popen) -> str:
    """Everything the serve started by ``start_serve`` has printed so far."""
    return process.log_path.read_text(errors="replace")  # type: ignore[attr-defined]


def stop_serve(process: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM, then the exit code; a serve that ignores SIGTERM is killed and the test fails."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            raise AssertionError(f"serve did not stop within {timeout:.0f} s of SIGTERM") from None
    return process.returncode


def mint_token(data_dir: Path, role: str = "admin", sub: str = "t") -> str:
    """A token from `abacus token --data-dir`, signed with the secret serve generated there."""
    out = subprocess.run(
        [sys.executable, "-m", "abacus.cli", "token", "--data-dir", str(data_dir), "--sub", sub, "--role", role],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


class LiveServe:
    """`start_serve` on a free port, with its URL and tokens at hand."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process = start_serve(data_dir, self.port, env, timeout=90.0)

    def token(self, role: str = "admin", sub: str = "tester@example.com") -> str:
        return mint_token(self.data_dir, role, sub)

    def stop(self) -> int:
        return stop_serve(self.process)
