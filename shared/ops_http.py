"""/metrics, /healthz and /readyz for the processes that serve no HTTP of their own (`abacus
worker`, `abacus rollup`, `abacus jobs`), on a small port of their own (ABACUS_METRICS_PORT),
for Prometheus and for compose's and Kubernetes' probes.

The standard library's threading server is enough: a scrape every few seconds and a probe or
two. Readiness checks run on a thread each and are bounded, so /readyz answers within
``READINESS_TIMEOUT_S`` even when Redis hangs.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from shared.prom import CONTENT_TYPE, Metrics

log = logging.getLogger(__name__)
READINESS_TIMEOUT_S = 2.0

Check = Callable[[], str | None]
"""None when fine, else a sentence saying what is wrong."""


class OpsServer:
    def __init__(self, metrics: Metrics, host: str, port: int, liveness: dict[str, Check], readiness: dict[str, Check]) -> None:
        self.metrics, self.liveness, self.readiness = metrics, liveness, readiness
        self._checks = ThreadPoolExecutor(max_workers=4, thread_name_prefix="abacus-readyz")
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="abacus-ops-http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._checks.shutdown(wait=False, cancel_futures=True)

    def answer(self, path: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            return 200, CONTENT_TYPE, self.metrics.render()
        if path == "/healthz":
            problems = {name: p for name, check in self.liveness.items() if (p := check()) is not None}
            return _health(problems, {"status": "ok"})
        if path == "/readyz":
            futures = {name: self._checks.submit(check) for name, check in self.readiness.items()}
            problems = {}
            for name, future in futures.items():
                try:
                    problem = future.result(timeout=READINESS_TIMEOUT_S)
                except FutureTimeout:
                    problem = f"its dependencies did not answer within {READINESS_TIMEOUT_S:g}s"
                except Exception as exc:  # a probe reports failures; it must not raise them
                    log.warning("readiness check %s failed: %r", name, exc)
                    problem = "a dependency (Redis or ClickHouse) does not answer"
                if problem is not None:
                    problems[name] = problem
            return _health(problems, {"status": "ready", "checks": sorted(self.readiness)})
        return 404, "application/json", b'{"error":"not found: /metrics, /healthz or /readyz"}'


def _health(problems: dict[str, str], ok: dict) -> tuple[int, str, bytes]:
    if problems:
        return 503, "application/json", json.dumps({"status": "unavailable", "problems": problems}).encode()
    return 200, "application/json", json.dumps(ok).encode()


def _handler_for(ops: OpsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            status, content_type, body = ops.answer(self.path.split("?", 1)[0])
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if status == 503:
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.debug("ops http: " + format, *args)

    return Handler
