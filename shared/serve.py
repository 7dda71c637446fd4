"""`abacus serve`: ingest and the query API on one port, with the worker in the same process.

chDB runs inside this process, so everything that touches ClickHouse must live here too: the
worker runs as a thread beside the ASGI app instead of as its own process.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from litestar import Litestar
from litestar.datastructures import State

from ingest.dispatch import BeaconDispatcher
from ingest.openapi_docs import document_beacon_routes
from ingest.sdk_routes import sdk_route_handlers
from ingest.service import IngestService
from query_api.app import build_query
from query_api.errors import EXCEPTION_HANDLERS
from shared.app_config import app_config, bounded_shutdown
from shared.bots import BotDetector
from shared.clickhouse import ClickHouse, migrate
from shared.cors import CORS
from shared.health import LivenessCheck, health_handlers
from shared.http_edge import guarded
from shared.openapi_statuses import document_statuses
from shared.prom import Metrics
from shared.redis_conn import async_client, sync_client
from shared.registry.cache import RegistryCache
from shared.request_metrics import RequestMetrics
from shared.settings import Settings
from worker.main import build_roller, build_worker

log = logging.getLogger(__name__)
SERVE_CONSUMER = "serve"


def create_serve_app(settings: Settings, liveness: dict[str, LivenessCheck] | None = None) -> Any:
    """``settings`` must carry resolved Redis and ClickHouse URLs (the CLI starts the embedded ones);
    ``liveness`` adds what /healthz checks besides the worker thread (the embedded Valkey)."""
    clickhouse = ClickHouse(settings.clickhouse_url or "")
    migrate(clickhouse.client(), retention_days=settings.retention_days)
    redis_client = async_client(settings.redis_url or "")
    registry = RegistryCache(redis_client, settings.registry_poll_ms / 1000)
    query = build_query(settings, clickhouse, registry)
    metrics = Metrics()  # one process: ingest's, the query API's, the worker's and the roller's together
    ingest = IngestService(redis_client, settings.stream, registry, BotDetector().is_bot, metrics)
    # One data dir has one serve process, so a fixed consumer name lets a restart finish the
    # batch the previous run had in hand, with the same deduplication token.
    worker = build_worker(settings, clickhouse, consumer_name=SERVE_CONSUMER, metrics=metrics)
    worker_thread = threading.Thread(target=worker.run, name="abacus-worker", daemon=True)
    roller = build_roller(settings, clickhouse, owner=SERVE_CONSUMER, metrics=metrics) if settings.rollup else None
    roller_thread = threading.Thread(target=roller.run, name="abacus-rollup", daemon=True) if roller else None

    from jobs.runner import JobsThread

    # Jobs touch chDB, which only this process can open: they run here, in a thread.
    jobs = JobsThread(settings, clickhouse) if settings.jobs_in_serve else None
    from shared.stream_metrics import StreamCollector

    # serve's /metrics has the stream's gauges too, read with a short timeout of their own.
    gauges_redis = sync_client(settings.redis_url or "", socket_timeout=2)
    metrics.collect_also(StreamCollector(gauges_redis, settings.stream, settings.dead_letter_stream, settings.consumer_group))
    worker_started = threading.Event()

    async def start_worker() -> None:
        worker_thread.start()
        worker_started.set()
        if roller_thread is not None:
            roller_thread.start()
        if jobs is not None:
            jobs.start()

    async def stop_worker() -> None:
        import anyio

        worker.request_stop()
        if jobs is not None:
            await anyio.to_thread.run_sync(jobs.stop)
        if roller is not None and roller_thread is not None:
            roller.request_stop()
            await anyio.to_thread.run_sync(roller_thread.join, 30)
            roller.redis.close()
        await anyio.to_thread.run_sync(worker_thread.join, 30)

    def worker_alive() -> str | None:
        # Not running before start-up has started it, or after it ended: only a death counts.
        return "the worker thread has stopped" if worker_started.is_set() and not worker_thread.is_alive() else None

    async def worker_ready() -> str | None:
        return None if worker_thread.is_alive() else "the worker thread is not running"

    async def close_clickhouse() -> None:
        gauges_redis.close()
        clickhouse.close()

    app = Litestar(
        route_handlers=[
            *ingest.route_handlers(),
            *sdk_route_handlers(registry, public_registry=False),  # the query API serves the registry
            *query.route_handlers,
            *health_handlers(
                {"ingest": ingest.readiness, "query": query.readiness, "worker": worker_ready},
                {**(liveness or {}), "worker": worker_alive, **({"jobs": jobs.alive} if jobs is not None else {})},
            ),
        ],
        state=State(query.state),
        on_startup=[registry.start, ingest.metrics_flusher.start, start_worker],
        on_shutdown=bounded_shutdown(
            stop_worker, registry.stop, ingest.metrics_flusher.stop, ingest.publisher.close, redis_client.aclose, close_clickhouse, seconds=35
        ),
        **app_config("Abacus", EXCEPTION_HANDLERS),  # type: ignore[arg-type]
    )
    document_beacon_routes(app)
    document_statuses(app)
    # Beacon paths skip Litestar's router and middleware, as under `abacus ingest`.
    return guarded(CORS(BeaconDispatcher(RequestMetrics(app, metrics), ingest.beacon_endpoints), settings.cors_origins), settings)
