"""What an operator asks of the stream: its length, each consumer group's pending entries and
lag, the dead letters, the rollup's bookmarks. Read-only; `abacus status` prints it and the
worker's /metrics exports it as gauges read when scraped.

Lag is an age: how long the oldest entry a group has not finished with (pending, or not yet
delivered) has been waiting, from its id's millisecond part against Redis's own clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
from redis.exceptions import ResponseError

from shared import redis_keys
from shared.rollup.protocol import is_rollup_group, rollers_running


@dataclass(frozen=True)
class GroupStatus:
    name: str
    consumers: int
    pending: int
    undelivered: int | None
    """Entries after the group's last delivered one (Redis 7's ``lag``; None when it cannot tell)."""
    lag_s: float
    """Age of the oldest entry the group has not finished with (0 when there is none)."""

    @property
    def is_rollup(self) -> bool:
        return is_rollup_group(self.name)


@dataclass(frozen=True)
class StreamStatus:
    stream: str
    length: int
    dead_letters: int
    groups: list[GroupStatus] = field(default_factory=list)
    registry_generation: int | None = None
    rollers: int = 0


def _ms_of(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


def read_status(client: redis.Redis, stream: str, dead_letter_stream: str) -> StreamStatus:
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    try:
        infos = client.xinfo_groups(stream)
    except ResponseError:
        infos = []  # no stream yet
    groups = [_group_status(client, stream, info, now_ms) for info in infos]
    generation = client.get(redis_keys.REGISTRY_GENERATION)
    return StreamStatus(
        stream=stream,
        length=int(client.xlen(stream)),
        dead_letters=int(client.xlen(dead_letter_stream)),
        groups=groups,
        registry_generation=int(generation) if generation is not None else None,
        rollers=rollers_running(client, now_ms),
    )


def _group_status(client: redis.Redis, stream: str, info: dict, now_ms: int) -> GroupStatus:
    name = _text(info["name"])
    pending = int(info.get("pending", 0))
    oldest_ms = None
    if pending:
        summary = client.xpending(stream, name)
        if summary.get("min"):
            oldest_ms = _ms_of(summary["min"])
    delivered = info.get("last-delivered-id") or b"0-0"
    delivered = delivered if isinstance(delivered, bytes) else delivered.encode()
    after = client.xrange(stream, min=b"(" + delivered, max="+", count=1)
    if after:
        first_new = _ms_of(after[0][0])
        oldest_ms = first_new if oldest_ms is None else min(oldest_ms, first_new)
    lag = info.get("lag")
    return GroupStatus(
        name=name,
        consumers=int(info.get("consumers", 0)),
        pending=pending,
        undelivered=int(lag) if lag is not None else None,
        lag_s=max(0, now_ms - oldest_ms) / 1000 if oldest_ms is not None else 0.0,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
