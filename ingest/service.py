"""The ingest service's routes and what they share; used alone by `abacus ingest` and
together with the query API by `abacus serve`."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis
from litestar import MediaType, asgi, get
from litestar.types import Receive, Scope, Send

from ingest.handler import BeaconEndpoint
from ingest.publisher import ShardedPublisher, StreamPublisher
from ingest.request import BATCH, EVENT, IMPRESSION
from ingest.sink import sink_for
from ingest.steps import DropCounter, DropReason
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
    ) -> None:
        self.redis = redis_client
        self.registry = registry
        self.counter = DropCounter()
        if isinstance(streams, str) or len(streams) == 1:
            stream = streams if isinstance(streams, str) else streams[0]
            self.publisher: StreamPublisher | ShardedPublisher = StreamPublisher(sink_for(redis_client, stream))
        else:
            self.publisher = ShardedPublisher([sink_for(redis_client, stream) for stream in streams])
        self.beacon_endpoints = {
            path: BeaconEndpoint(endpoint, self.publisher, registry, is_bot, self.counter)
            for path, endpoint in BEACON_PATHS.items()
        }

    def route_handlers(self) -> list:
        # Litestar routes the beacon paths too: for apps without BeaconDispatcher in front, and
        # for the path spellings Litestar accepts beyond the exact ones (a trailing slash).
        handlers = [_as_route(path, beacon_endpoint) for path, beacon_endpoint in self.beacon_endpoints.items()]

        counter = self.counter

        @get("/metrics", media_type=MediaType.TEXT, tags=["health"], sync_to_thread=False)
        def metrics() -> str:
            lines = [
                "# HELP abacus_ingest_accepted_total Beacons appended to the stream by this process.",
                "# TYPE abacus_ingest_accepted_total counter",
                f"abacus_ingest_accepted_total {counter.accepted}",
                "# HELP abacus_ingest_dropped_total Beacons answered 202 but dropped, by reason.",
                "# TYPE abacus_ingest_dropped_total counter",
            ]
            lines += [f'abacus_ingest_dropped_total{{reason="{r.value}"}} {counter.counts[r]}' for r in DropReason]
            return "\n".join(lines) + "\n"

        return [*handlers, metrics]

    async def readiness(self) -> str | None:
        await self.redis.ping()
        if self.registry.view is None:
            return "experiment registry not loaded"
        return None


def _as_route(path: str, endpoint: BeaconEndpoint):
    async def beacon_route(scope: Scope, receive: Receive, send: Send) -> None:
        await endpoint(scope, receive, send)

    beacon_route.__name__ = f"ingest_{endpoint.endpoint.name}"
    return asgi(path, is_mount=False, copy_scope=False, name=beacon_route.__name__)(beacon_route)
