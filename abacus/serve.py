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

from ingest.bots import BotDetector
from ingest.bots.report import report_fast_path
from ingest.edge import IngestEdge
from ingest.edge_asgi import IngestASGI
from ingest.openapi import document_into
from ingest.sdk_routes import SdkRoutes
from ingest.service import IngestService
from ingest.sink import lean_address
from query_api.app import build_query
from query_api.errors import EXCEPTION_HANDLERS
from query_api.request_metrics import RequestMetrics
from shared.app_config import app_config, bounded_shutdown
from shared.clickhouse import ClickHouse, migrate
from shared.cors import CORS
from shared.health import LivenessCheck, health_handlers, metrics_handler
from shared.http_edge import guarded
from shared.openapi_statuses import document_statuses
from shared.prom import Metrics
from shared.redis_conn import async_client_for, sync_client_for
from shared.redis_keys import stream_layout
from shared.registry.cache import RegistryCache
from shared.settings import Settings
from worker.main import build_roller, build_workers

log = logging.getLogger(__name__)
SERVE_CONSUMER = "serve"


def create_serve_app(settings: Settings, liveness: dict[str, LivenessCheck] | None = None) -> Any:
    """``settings`` must carry resolved Redis and ClickHouse URLs (the CLI starts the embedded ones);
    ``liveness`` adds what /healthz checks besides the worker thread (the embedded Valkey)."""
    clickhouse = ClickHouse(settings.clickhouse_url or "", settings.clickhouse_cluster)
    migrate(clickhouse.client(), cluster=settings.clickhouse_cluster, retention_days=settings.retention_days)
    redis_client = async_client_for(settings)
    registry = RegistryCache(redis_client, settings.registry_poll_ms / 1000)
    query = build_query(settings, clickhouse, registry)
    metrics = Metrics()  # one process: ingest's, the query API's, the worker's and the roller's together
    layout = stream_layout(settings)
    ingest = IngestService(
        redis_client,
        [shard.stream for shard in layout],
        registry,
        report_fast_path(BotDetector(), metrics).is_bot,
        metrics,
        lean_address(settings),
    )
    # One data dir has one serve process, so a fixed consumer name lets a restart finish the
    # batch the previous run had in hand, with the same deduplication token.
    workers = build_workers(settings, clickhouse, consumer_name=SERVE_CONSUMER, metrics=metrics)
    worker_threads = [
        threading.Thread(target=worker.run, name=f"abacus-worker-{i}" if i else "abacus-worker", daemon=True)
        for i, worker in enumerate(workers)
    ]
    roller = build_roller(settings, clickhouse, owner=SERVE_CONSUMER, metrics=metrics) if settings.rollup else None
    roller_thread = threading.Thread(target=roller.run, name="abacus-rollup", daemon=True) if roller else None

    from jobs.runner import JobsThread

    # Jobs touch chDB, which only this process can open: they run here, in a thread.
    jobs = JobsThread(settings, clickhouse) if settings.jobs_in_serve else None
    from shared.stream_metrics import StreamCollector

    # serve's /metrics has the stream's gauges too, read with a short timeout of their own.
    gauges_redis = sync_client_for(settings, socket_timeout=2)
    metrics.collect_also(StreamCollector(gauges_redis, layout, settings.consumer_group))
    worker_started = threading.Event()

    async def start_worker() -> None:
        for thread in worker_threads:
            thread.start()
        worker_started.set()
        if roller_thread is not None:
            roller_thread.start()
        if jobs is not None:
            jobs.start()

    async def stop_worker() -> None:
        import anyio

        for worker in workers:
            worker.request_stop()
        if jobs is not None:
            await anyio.to_thread.run_sync(jobs.stop)
        if roller is not None and roller_thread is not None:
            roller.request_stop()
            await anyio.to_thread.run_sync(roller_thread.join, 30)
            roller.redis.close()
        for thread in worker_threads:
            await anyio.to_thread.run_sync(thread.join, 30)

    def worker_alive() -> str | None:
        # Not running before start-up has started it, or after it ended: only a death counts.
        stopped = worker_started.is_set() and not all(thread.is_alive() for thread in worker_threads)
        return "the worker thread has stopped" if stopped else None

    async def worker_ready() -> str | None:
        return None if all(thread.is_alive() for thread in worker_threads) else "the worker thread is not running"

    async def close_clickhouse() -> None:
        gauges_redis.close()
        clickhouse.close()

    app = Litestar(
        route_handlers=[
            metrics_handler(metrics),
            *query.route_handlers,
            *health_handlers(
                {"ingest": ingest.readiness, "query": query.readiness, "worker": worker_ready},
                {**(liveness or {}), "worker": worker_alive, **({"jobs": jobs.alive} if jobs is not None else {})},
            ),
        ],
        state=State(query.state),
        on_startup=[registry.start, query.registry_loader.start, ingest.metrics_flusher.start, start_worker],
        on_shutdown=bounded_shutdown(
            stop_worker,
            query.registry_loader.stop,
            registry.stop,
            ingest.metrics_flusher.stop,
            ingest.publisher.close,
            redis_client.aclose,
            close_clickhouse,
            seconds=35,
        ),
        **app_config("Abacus", EXCEPTION_HANDLERS),  # type: ignore[arg-type]
    )
    document_statuses(app)
    document_into(app)
    # Ingest's routes (the same table as under `abacus ingest`, without the public registry, which
    # the query API serves) skip Litestar's router and middleware; every other path goes to Litestar.
    sdk = SdkRoutes(registry, public_registry=False)
    edge = IngestEdge({**ingest.routes(), **sdk.routes}, sdk.prefixes)
    return guarded(CORS(IngestASGI(edge, RequestMetrics(app, metrics)), settings.cors_origins), settings)
