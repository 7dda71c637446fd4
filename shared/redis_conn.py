"""Redis clients with timeouts: a hung Redis must turn into a 503 or a back-off, never a hang.

Every process builds its clients here, so one setting chooses for all of them between a single
server, a Redis/Valkey Cluster (redis-py's ``RedisCluster``) and a primary found through Sentinel.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from shared.settings import Settings

_CONNECT_TIMEOUT = 2.0


def async_client(url: str, *, cluster: bool = False, sentinel_master: str = "") -> aioredis.Redis:
    if cluster:
        return AsyncRedisCluster.from_url(url, socket_timeout=5.0, socket_connect_timeout=_CONNECT_TIMEOUT)  # type: ignore[return-value]
    if sentinel_master:
        from redis.asyncio.sentinel import Sentinel

        sentinel = Sentinel(_sentinel_nodes(url), socket_timeout=5.0, socket_connect_timeout=_CONNECT_TIMEOUT)
        return sentinel.master_for(sentinel_master, socket_timeout=5.0, socket_connect_timeout=_CONNECT_TIMEOUT, **_auth(url))
    return aioredis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=_CONNECT_TIMEOUT)


def sync_client(url: str, socket_timeout: float = 5.0, *, cluster: bool = False, sentinel_master: str = "") -> redis.Redis:
    if cluster:
        return RedisCluster.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=_CONNECT_TIMEOUT)  # type: ignore[return-value]
    if sentinel_master:
        from redis.sentinel import Sentinel

        sentinel = Sentinel(_sentinel_nodes(url), socket_timeout=socket_timeout, socket_connect_timeout=_CONNECT_TIMEOUT)
        return sentinel.master_for(
            sentinel_master, socket_timeout=socket_timeout, socket_connect_timeout=_CONNECT_TIMEOUT, **_auth(url)
        )
    return redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=_CONNECT_TIMEOUT)


def _check(settings: Settings) -> None:
    settings.refuse_conflicts()  # also for settings built in code, not read by from_env


def async_client_for(settings: Settings) -> aioredis.Redis:
    _check(settings)
    return async_client(settings.redis_url or "", cluster=settings.redis_cluster, sentinel_master=settings.redis_sentinel_master)


def sync_client_for(settings: Settings, socket_timeout: float = 5.0) -> redis.Redis:
    _check(settings)
    return sync_client(
        settings.redis_url or "", socket_timeout, cluster=settings.redis_cluster, sentinel_master=settings.redis_sentinel_master
    )


def is_cluster(client: object) -> bool:
    return isinstance(client, (RedisCluster, AsyncRedisCluster))


def raw_name(client: object, command: bytes) -> bytes | str:
    """A command's name for ``execute_command``. Named in bytes, redis-py skips its pure-Python
    reply parser (the worker's and roller's hot reads rely on that); the cluster client must find
    the command's keys by its name as a str, so there it gets one, and parses the reply itself."""
    return command.decode() if is_cluster(client) else command


def _sentinel_nodes(url: str) -> list[tuple[str, int]]:
    """``redis://host1:26379,host2:26379/0``: every Sentinel named in the URL's host part."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    nodes = []
    for part in netloc.split(","):
        host, _, port = part.partition(":")
        nodes.append((host or "127.0.0.1", int(port or 26379)))
    return nodes


def _auth(url: str) -> dict[str, object]:
    parts = urlsplit(url)
    db = parts.path.strip("/")
    found: dict[str, object] = {"db": int(db) if db.isdigit() else 0}
    if parts.username:
        found["username"] = parts.username
    if parts.password:
        found["password"] = parts.password
    return found
