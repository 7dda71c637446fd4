"""Redis clients with timeouts: a hung Redis must turn into a 503 or a back-off, never a hang."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

_TIMEOUTS = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0}


def async_client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, **_TIMEOUTS)


def sync_client(url: str, socket_timeout: float = 5.0) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=2.0)
