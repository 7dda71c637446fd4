"""Names and ids of the rollup protocol: which share an experiment is in, which stream groups are
share bookmarks, how entry ids compare. Pure functions, no Redis: the protocol
(shared/rollup/protocol.py, shared/rollup/protocol_share.py) applies them to its keys."""

from __future__ import annotations

import hashlib

from shared import redis_keys


def shard_of(experiment_key: str, shards: int) -> int:
    """The share an experiment belongs to: the first 8 bytes of the key's MD5, big-endian, modulo
    the shares, which is ClickHouse's ``halfMD5(experiment_key) % shards`` (results_sql)."""
    if shards == 1:
        return 0
    return int.from_bytes(hashlib.md5(experiment_key.encode()).digest()[:8], "big") % shards


def is_rollup_group(name: str) -> bool:
    """Whether a consumer group on the stream is a rollup share's bookmark."""
    return name == redis_keys.ROLLUP_GROUP or name.startswith(redis_keys.ROLLUP_GROUP + ":")


def id_key(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.lstrip("(").partition("-")
    return int(ms), int(seq or 0)


def rebuild_wanted(requested: bytes | None, built: bytes | None) -> bool:
    """Whether a rebuild was requested after the one the built value (``"<generation> <served>"``) served."""
    if not requested:
        return False
    served = built.split(b" ")[1] if built and b" " in built else b"0"
    return int(requested) > int(served)


def parse_group(name: str) -> tuple[int, int]:
    """(shard, shards) of a rollup group name."""
    if name == redis_keys.ROLLUP_GROUP:
        return 0, 1
    share = name.rpartition(":")[2]
    shard, _, shards = share.partition("of")
    return int(shard), int(shards)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
