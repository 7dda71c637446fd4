"""`abacus ingest`: the beacon endpoints alone, against a Redis server.

``create_app`` builds the ASGI app (tests, benchmarks and anything ASGI); `abacus ingest` serves
it wrapped by ``create_rsgi_app``, which answers the beacon POSTs without granian's ASGI layer.
"""

from __future__ import annotations

import gc

from litestar import Litestar

from ingest.bots import BotDetector
from ingest.bots.report import report_fast_path
from ingest.dispatch import BeaconDispatcher
from ingest.handler import BeaconEndpoint
from ingest.openapi_docs import document_beacon_routes
from ingest.rsgi import IngestRSGI
from ingest.sdk_routes import sdk_route_handlers
from ingest.service import IngestService
from ingest.sink import lean_address
from shared import redis_keys
from shared.app_config import app_config, bounded_shutdown
from shared.cors import CORS
from shared.health import health_handlers
from shared.http_edge import HeadAsGet
from shared.openapi_statuses import document_statuses
from shared.prom import Metrics
from shared.redis_conn import async_client_for
from shared.registry.cache import RegistryCache
from shared.settings import Settings


def create_app(settings: Settings) -> CORS:
    return _build(settings)[0]


def create_rsgi_app(settings: Settings) -> IngestRSGI:
    return IngestRSGI(*_build(settings), body_timeout_s=settings.http_body_timeout_ms / 1000)


def _build(settings: Settings) -> tuple[CORS, dict[str, BeaconEndpoint]]:
    if not settings.redis_url:
        raise ValueError("abacus ingest needs ABACUS_REDIS_URL")
    redis_client = async_client_for(settings)
    registry = RegistryCache(redis_client, settings.registry_poll_ms / 1000)
    streams = [shard.stream for shard in redis_keys.stream_layout(settings)]
    metrics = Metrics()
    detector = report_fast_path(BotDetector(), metrics)
    service = IngestService(redis_client, streams, registry, detector.is_bot, metrics, lean_address(settings))
    app = Litestar(
        route_handlers=[
            *service.route_handlers(),
            # No query API shares this origin, so the SDK's registry is served here too.
            *sdk_route_handlers(registry, public_registry=True),
            *health_handlers({"ingest": service.readiness}),
        ],
        on_startup=[registry.start, service.metrics_flusher.start],
        on_shutdown=bounded_shutdown(registry.stop, service.metrics_flusher.stop, service.publisher.close, redis_client.aclose),
        **app_config("Abacus ingest"),  # type: ignore[arg-type]
    )
    document_beacon_routes(app)
    document_statuses(app)
    return CORS(HeadAsGet(BeaconDispatcher(app, service.beacon_endpoints)), settings.cors_origins), service.beacon_endpoints


def app_from_env() -> IngestRSGI:
    """Granian's factory target (RSGI): each server worker process builds its own app from the environment."""
    app = create_rsgi_app(Settings.from_env())
    # What exists now (modules, Litestar's routes and schema, the bot patterns) lives as long as
    # the worker. Frozen, it is no longer walked by the full collections that beacon traffic sets
    # off every few seconds: those were the p99 tail (53 -> 15 ms) and a third of a batch's cost.
    gc.freeze()
    return app
