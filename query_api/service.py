"""What the query API's routes share: the registry (durable store and in-memory cache) and ClickHouse."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import redis
from litestar.exceptions import ServiceUnavailableException
from redis.exceptions import RedisError

from query_api.registry_store import RegistryStore
from shared.clickhouse import ClickHouse
from shared.redis_keys import StreamShard
from shared.registry.cache import RegistryCache
from shared.registry.models import RegistrySnapshot
from shared.rollup.protocol import Freshness, RollupProtocol

T = TypeVar("T")


class QueryService:
    def __init__(
        self,
        store: RegistryStore,
        registry: RegistryCache,
        clickhouse: ClickHouse,
        redis_client: redis.Redis,
        rollup_max_lag_ms: int,
        stream: str | list[StreamShard] = "abacus:events",
        worker_group: str = "abacus-workers",
        rollup_shards: int = 1,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clickhouse = clickhouse
        self.redis = redis_client
        self.rollup_max_lag_ms = rollup_max_lag_ms
        self._stream, self._worker_group, self._rollup_shards = stream, worker_group, rollup_shards

    def rollup(self) -> RollupProtocol:
        """The rollup's protocol, over this service's Redis connection (the one owner of its state)."""
        return RollupProtocol(self.redis, self._stream, self._worker_group, self._rollup_shards, self.rollup_max_lag_ms)

    def rollup_freshness(self, experiment_keys: list[str]) -> Freshness | None:
        """How current the rollup is for these experiments; None while Redis does not answer
        (results then come from the events, which need only ClickHouse)."""
        try:
            return self.rollup().freshness(experiment_keys)
        except RedisError:
            return None

    def apply(self, change: Callable[[RegistryStore], T]) -> T:
        """Run a registry change and serve its result from this process at once, without waiting
        for the next poll (other processes pick it up from Redis within one poll interval)."""
        result = change(self.store)
        if self.store.last_published is not None:
            self.registry.install(self.store.last_published)
        return result

    def require_snapshot(self) -> RegistrySnapshot:
        snapshot = self.registry.snapshot
        if snapshot is None:
            raise ServiceUnavailableException("Experiment registry not loaded yet", headers={"Retry-After": "1"})
        return snapshot

    def readiness(self) -> None:
        """Raises when Redis or ClickHouse does not answer."""
        self.store.ping()
        self.clickhouse.client().query("SELECT 1")


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    """Run blocking Redis/ClickHouse work off the event loop, so ingest keeps answering meanwhile."""
    return await anyio.to_thread.run_sync(function, *args)
