"""The in-memory registry every ingest process checks beacons against, kept fresh from Redis.

Each process polls one small key (the generation counter) and fetches the snapshot only when it
changed, so a change made by any process is seen within one poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared import redis_keys
from shared.registry.models import RegistrySnapshot

log = logging.getLogger(__name__)


class IngestView:
    """What ingest needs from a snapshot, as dict and set lookups."""

    __slots__ = ("experiments_enabled", "generation", "variants_by_experiment", "enabled_experiments")

    def __init__(self, snapshot: RegistrySnapshot) -> None:
        self.generation = snapshot.generation
        self.experiments_enabled = snapshot.settings.experiments_enabled
        active = snapshot.active()
        self.variants_by_experiment = {e.experiment_key: frozenset(v.variant_key for v in e.variants) for e in active}
        self.enabled_experiments = frozenset(e.experiment_key for e in active if e.enabled)


class RegistryCache:
    def __init__(self, redis_client: aioredis.Redis, poll_interval_s: float) -> None:
        self._redis = redis_client
        self._poll_interval_s = poll_interval_s
        self.snapshot: RegistrySnapshot | None = None
        self.view: IngestView | None = None
        self._task: asyncio.Task[None] | None = None

    def install(self, snapshot: RegistrySnapshot) -> None:
        """Take a snapshot this process just published, without waiting for the next poll."""
        if self.snapshot is None or snapshot.generation >= self.snapshot.generation:
            self.snapshot = snapshot
            self.view = IngestView(snapshot)

    async def refresh(self) -> None:
        generation = await self._redis.get(redis_keys.REGISTRY_GENERATION)
        if generation is None:
            return
        if self.snapshot is not None and int(generation) == self.snapshot.generation:
            return
        raw = await self._redis.get(redis_keys.REGISTRY_SNAPSHOT)
        if raw is not None:
            self.install(msgspec.json.decode(raw, type=RegistrySnapshot))

    async def start(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="registry-poll")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._poll_interval_s)
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                # Keep serving the last snapshot: a Redis blip must not make ingest forget experiments.
                # Said once per outage, not every poll.
                if not failing:
                    log.warning("registry refresh failed (keeping the last snapshot until Redis answers): %s", exc)
                failing = True
                continue
            except msgspec.DecodeError as exc:
                log.error("registry snapshot in Redis is unreadable: %s", exc)
            if failing:
                log.info("registry refresh works again")
                failing = False
