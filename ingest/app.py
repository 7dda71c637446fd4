"""`abacus ingest`: the beacon endpoints and the SDK's routes alone, against a Redis server.

One route table (``ingest.edge``) served over RSGI by granian (``create_rsgi_app``, what `abacus
ingest` runs) or over ASGI (``create_app``: the in-process test client, anything ASGI).
"""

from __future__ import annotations

import gc

from ingest.bots import BotDetector
from ingest.bots.report import report_fast_path
from ingest.edge import IngestEdge
from ingest.edge_asgi import IngestASGI
from ingest.edge_rsgi import IngestRSGI
from ingest.ops_routes import ops_routes
from ingest.sdk_routes import SdkRoutes
from ingest.service import IngestService
from ingest.sink import lean_address
from shared import redis_keys
from shared.app_config import bounded_shutdown
from shared.cors import CORS
from shared.http_edge import HeadAsGet
from shared.prom import Metrics
from shared.redis_conn import async_client_for
from shared.registry.cache import RegistryCache
from shared.settings import Settings


def create_app(settings: Settings) -> CORS:
    return CORS(HeadAsGet(IngestASGI(build_edge(settings))), settings.cors_origins)


def create_rsgi_app(settings: Settings) -> IngestRSGI:
    return IngestRSGI(build_edge(settings), settings.cors_origins, settings.http_body_timeout_ms / 1000)


def build_edge(settings: Settings) -> IngestEdge:
    if not settings.redis_url:
        raise ValueError("abacus ingest needs ABACUS_REDIS_URL")
    redis_client = async_client_for(settings)
    registry = RegistryCache(redis_client, settings.registry_poll_ms / 1000)
    streams = [shard.stream for shard in redis_keys.stream_layout(settings)]
    metrics = Metrics()
    detector = report_fast_path(BotDetector(), metrics)
    service = IngestService(redis_client, streams, registry, detector.is_bot, metrics, lean_address(settings))
    # No query API shares this origin, so the SDK's registry is served here too.
    sdk = SdkRoutes(registry, public_registry=True)
    return IngestEdge(
        {**service.routes(), **sdk.routes, **ops_routes(service.readiness, metrics)},
        sdk.prefixes,
        on_startup=[registry.start, service.metrics_flusher.start],
        on_shutdown=bounded_shutdown(registry.stop, service.metrics_flusher.stop, service.publisher.close, redis_client.aclose),
    )


def app_from_env() -> IngestRSGI:
    """Granian's factory target (RSGI): each server worker process builds its own app from the environment."""
    app = create_rsgi_app(Settings.from_env())
    # What exists now (modules, the route table and schema, the bot patterns) lives as long as
    # the worker. Frozen, it is no longer walked by the full collections that beacon traffic sets
    # off every few seconds: those were the p99 tail (53 -> 15 ms) and a third of a batch's cost.
    gc.freeze()
    return app
