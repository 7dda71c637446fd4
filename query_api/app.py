"""`abacus query-api`: public registry, admin definitions and settings, and results."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import anyio
from litestar import Litestar
from litestar.datastructures import State

from query_api.analyst_tools import ANALYST_TOOL_ROUTES
from query_api.auth import TokenVerifier
from query_api.errors import EXCEPTION_HANDLERS
from query_api.job_routes import JOB_ROUTES
from query_api.plan_routes import PLAN_ROUTES
from query_api.registry_loading import RegistryLoader
from query_api.registry_routes import REGISTRY_ROUTES
from query_api.registry_seed import NO_SEED, find_seed, load_seed
from query_api.registry_store import RegistryStore
from query_api.request_metrics import RequestMetrics
from query_api.results_routes import RESULTS_ROUTES
from query_api.rollup_routes import ROLLUP_ROUTES
from query_api.service import QueryService
from shared.app_config import app_config, bounded_shutdown
from shared.clickhouse import ClickHouse, is_chdb
from shared.cors import CORS
from shared.health import health_handlers, metrics_handler
from shared.http_edge import guarded
from shared.job_queue import check_jobs_redis, jobs_redis
from shared.openapi_statuses import document_statuses
from shared.prom import Metrics
from shared.redis_conn import async_client_for, sync_client_for
from shared.redis_keys import stream_layout
from shared.registry.cache import RegistryCache
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class QueryParts:
    service: QueryService
    route_handlers: list
    registry_loader: RegistryLoader
    state: dict = field(default_factory=dict)

    async def readiness(self) -> str | None:
        # Abandoned, not awaited, when the probe's bound passes: a Redis that hangs holds the
        # thread for its socket timeout (and retries), not /readyz.
        await anyio.to_thread.run_sync(self.service.readiness, abandon_on_cancel=True)
        if not self.registry_loader.loaded or self.service.registry.snapshot is None:
            return "experiment registry not loaded"
        return None


def build_query(settings: Settings, clickhouse: ClickHouse, registry: RegistryCache) -> QueryParts:
    """Routes and state of the query API; loads (and on first start seeds) the registry."""
    verifier = TokenVerifier(settings)
    redis_client = sync_client_for(settings)
    store = RegistryStore(clickhouse, redis_client)
    seed_path = find_seed(settings.registry_seed)
    if seed_path is None and str(settings.registry_seed) != NO_SEED:
        log.warning("registry seed %s not found; an empty registry starts empty", settings.registry_seed)
    seed = load_seed(seed_path) if seed_path is not None else None
    loader = RegistryLoader(lambda: store.load(seed), registry)
    loader.try_now()  # if ClickHouse or Redis is not up yet, the app's start-up keeps trying
    service = QueryService(
        store,
        registry,
        clickhouse,
        redis_client,
        settings.rollup_max_lag_ms,
        stream=stream_layout(settings),
        worker_group=settings.consumer_group,
        rollup_shards=settings.rollup_shards,
    )
    return QueryParts(
        registry_loader=loader,
        service=service,
        route_handlers=[*REGISTRY_ROUTES, *RESULTS_ROUTES, *ROLLUP_ROUTES, *PLAN_ROUTES, *ANALYST_TOOL_ROUTES, *JOB_ROUTES],
        # rq's queue: on the main Redis unless ABACUS_JOBS_REDIS_URL names another (a cluster must).
        state={
            "query_service": service,
            "token_verifier": verifier,
            "settings": settings,
            "jobs_redis": _jobs_redis(settings, redis_client),
        },
    )


def _jobs_redis(settings: Settings, main: Any) -> Any:
    check_jobs_redis(settings)
    return jobs_redis(settings) if settings.jobs_redis_url else main


def create_app(settings: Settings) -> Any:
    if not settings.redis_url:
        raise ValueError("abacus query-api needs ABACUS_REDIS_URL")
    if not settings.clickhouse_url or is_chdb(settings.clickhouse_url):
        raise ValueError("abacus query-api needs an http(s):// ABACUS_CLICKHOUSE_URL")
    clickhouse = ClickHouse(settings.clickhouse_url, settings.clickhouse_cluster)
    redis_client = async_client_for(settings)
    registry = RegistryCache(redis_client, settings.registry_poll_ms / 1000)
    parts = build_query(settings, clickhouse, registry)
    metrics = Metrics()

    async def close_clickhouse() -> None:
        clickhouse.close()

    app = Litestar(
        route_handlers=[*parts.route_handlers, *health_handlers({"query": parts.readiness}), metrics_handler(metrics)],
        state=State(parts.state),
        on_startup=[registry.start, parts.registry_loader.start],
        on_shutdown=bounded_shutdown(parts.registry_loader.stop, registry.stop, redis_client.aclose, close_clickhouse),
        **app_config("Abacus query API", EXCEPTION_HANDLERS),  # type: ignore[arg-type]
    )
    document_statuses(app)
    return guarded(CORS(RequestMetrics(app, metrics), settings.cors_origins), settings)


def app_from_env() -> Any:
    return create_app(Settings.from_env())
