"""Request latency by route for the Litestar apps (query API, and serve's non-beacon routes), and
where results came from (``X-Abacus-Source``: rollup, events or rollup+events), read off the answer's headers.

An ASGI wrapper outside Litestar: the route is the handler's path template Litestar put in the
scope while routing (``/api/v1/experiments/{experiment_key:str}/results``, not one series per
experiment), ``unmatched`` for a 404 before routing.
"""

from __future__ import annotations

import time
from typing import Any

from shared.prom import LATENCY_BUCKETS, Metrics

_SOURCE_HEADER = b"x-abacus-source"


class RequestMetrics:
    def __init__(self, app: Any, metrics: Metrics, prefix: str = "abacus_http") -> None:
        self.app = app
        self._latency = metrics.histogram(
            f"{prefix}_request_seconds",
            "Time to answer a request, by route template, method and status.",
            LATENCY_BUCKETS,
            ["route", "method", "status"],
        )
        self._results = metrics.counter(
            "abacus_results_source",
            "Results answers by where their numbers came from (rollup, events or rollup+events).",
            ["route", "source"],
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)  # e.g. the Litestar app's openapi_schema for the tests

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answer: dict[str, Any] = {"status": 500, "source": None}

        async def observing_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == _SOURCE_HEADER:
                        answer["source"] = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            route = _route_of(scope)
            self._latency.labels(route, scope["method"], str(answer["status"])).observe(time.perf_counter() - started)
            if answer["source"] is not None:
                self._results.labels(route, answer["source"]).inc()


def _route_of(scope: dict) -> str:
    handler = scope.get("route_handler")
    paths = getattr(handler, "paths", None)
    return min(paths) if paths else "unmatched"
