"""The ingest service's routes and what they share; used alone by `abacus ingest` and
together with the query API by `abacus serve`."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from ingest.edge import Methods
from ingest.handler import BeaconEndpoint
from ingest.metrics import Flusher, IngestMetrics
from ingest.publisher import ShardedPublisher, StreamPublisher
from ingest.request import BATCH, EVENT, IMPRESSION
from ingest.resp import RespAddress
from ingest.sink import sink_for
from shared.prom import Metrics
from shared.registry.cache import RegistryCache

BEACON_PATHS = {
    "/api/experiments/event": EVENT,
    "/api/experiments/impression": IMPRESSION,
    "/api/experiments/batch": BATCH,
}


class IngestService:
    def __init__(
        self,
        redis_client: aioredis.Redis,
        streams: str | list[str],
        registry: RegistryCache,
        is_bot: Callable[[str | None], bool],
        metrics: Metrics | None = None,
        lean_address: RespAddress | None = None,
    ) -> None:
        """``metrics``: where to count (serve shares one with the query API); a new one if None.
        ``lean_address``: where the lean stream sink appends (``ingest.sink.lean_address``); redis-py if None."""
        self.redis = redis_client
        self.registry = registry
        self.metrics = IngestMetrics(metrics)
        self.metrics_flusher = Flusher(self.metrics)  # the app's startup and shutdown run it
        if isinstance(streams, str) or len(streams) == 1:
            stream = streams if isinstance(streams, str) else streams[0]
            self.publisher: StreamPublisher | ShardedPublisher = StreamPublisher(
                sink_for(redis_client, stream, lean_address), self.metrics.appended, self.metrics.wait_refused.inc
            )
        else:
            self.publisher = ShardedPublisher(
                [sink_for(redis_client, stream, lean_address) for stream in streams],
                self.metrics.appended,
                self.metrics.wait_refused.inc,
            )
        self.beacon_endpoints = {
            path: BeaconEndpoint(endpoint, self.publisher, registry, is_bot, self.metrics)
            for path, endpoint in BEACON_PATHS.items()
        }

    def routes(self) -> dict[str, Methods]:
        """The beacon paths for ``ingest.edge.IngestEdge``."""
        return {path: {"POST": endpoint} for path, endpoint in self.beacon_endpoints.items()}

    async def readiness(self) -> str | None:
        await self.redis.ping()
        if self.registry.view is None:
            return "experiment registry not loaded"
        return None
