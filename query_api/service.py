"""What the query API's routes share: the registry (durable store and in-memory cache) and ClickHouse."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import redis
from litestar.exceptions import ServiceUnavailableException
from redis.exceptions import RedisError

from shared import redis_keys
from shared.clickhouse import ClickHouse
from shared.registry.cache import RegistryCache
from shared.registry.models import RegistrySnapshot
from shared.registry.store import RegistryStore

T = TypeVar("T")


class QueryService:
    def __init__(
        self,
        store: RegistryStore,
        registry: RegistryCache,
        clickhouse: ClickHouse,
        redis_client: redis.Redis,
        rollup_max_lag_ms: int,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clickhouse = clickhouse
        self.redis = redis_client
        self.rollup_max_lag_ms = rollup_max_lag_ms

    def rollup_state(self) -> tuple[bool, bool, int | None, bool]:
        """(built, a roller is running, how far behind it is in ms, rebuild requested)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(redis_keys.ROLLUP_READY)
        pipe.exists(redis_keys.ROLLUP_LOCK)
        pipe.get(redis_keys.ROLLUP_BEHIND_MS)
        pipe.exists(redis_keys.ROLLUP_REBUILD)
        ready, alive, behind, rebuild = pipe.execute()
        return bool(ready), bool(alive), int(behind) if behind is not None else None, bool(rebuild)

    def rollup_is_live(self) -> bool:
        """The rollup is built, a roller is folding new events into it, and it is not far behind;
        otherwise its totals could be stale and results are computed from the events (which need
        only ClickHouse: results keep answering while Redis is down)."""
        try:
            built, alive, behind, _ = self.rollup_state()
        except RedisError:
            return False
        return self.live(built, alive, behind)

    def live(self, built: bool, alive: bool, behind_ms: int | None) -> bool:
        # No report means no step has finished lately (the report expires): not to be trusted.
        return built and alive and behind_ms is not None and behind_ms <= self.rollup_max_lag_ms

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
