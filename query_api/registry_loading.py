"""Loading the registry from ClickHouse at start, and again until it works.

`abacus query-api` may start before ClickHouse (or Redis) answers: compose and Kubernetes start
everything at once. It must not die with a traceback then: it starts, answers what needs
ClickHouse with 503 and Retry-After, says "not ready" on /readyz, and keeps trying in the
background, with back-off, until the registry is loaded (and, on a first start, seeded).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from clickhouse_connect.driver.exceptions import OperationalError
from redis.exceptions import RedisError

from shared.registry.cache import RegistryCache
from shared.registry.models import RegistrySnapshot

log = logging.getLogger(__name__)

UNAVAILABLE = (OperationalError, RedisError, OSError)
_FIRST_RETRY_S = 1.0
_LONGEST_RETRY_S = 30.0


class RegistryLoader:
    def __init__(self, load: Callable[[], RegistrySnapshot], registry: RegistryCache) -> None:
        self._load = load
        self._registry = registry
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.loaded = False

    def try_now(self) -> bool:
        """One attempt: True once the registry is loaded (the cache then holds it)."""
        try:
            self._registry.install(self._load())
        except UNAVAILABLE as exc:
            log.warning("the registry cannot be loaded yet (%s: %s); retrying in the background", type(exc).__name__, exc)
            return False
        self.loaded = True
        return True

    async def start(self) -> None:
        """Keep trying in a thread of its own when the first attempt failed (an app start-up hook)."""
        if self.loaded or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._retry, name="abacus-registry-load", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stopping.set()

    def _retry(self) -> None:
        wait = _FIRST_RETRY_S
        while not self._stopping.wait(wait):
            if self.try_now():
                log.info("the registry is loaded")
                return
            wait = min(wait * 2, _LONGEST_RETRY_S)
