"""Listing dead letters with their reasons: what the query API shows and the replay job walks.

Both the admin API (query_api) and the jobs read it, so it lives below them both.
"""

from __future__ import annotations

import msgspec
import redis

from shared import redis_keys
from shared.wire import StreamEnvelope


class DeadLetter(msgspec.Struct):
    id: str
    source_id: str | None
    reason: str
    dead_at_ms: int | None
    events: int | None
    """Events the entry holds; None when it does not decode (it would be dead-lettered again)."""
    replayed_as: str | None


def _text(value: bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if value is not None else None


def events_in(fields: dict[bytes, bytes]) -> int | None:
    try:
        return len(msgspec.msgpack.decode(fields[b"e"], type=StreamEnvelope).events)
    except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def list_dead_letters(client: redis.Redis, dead_letter_stream: str, after: str = "-", limit: int = 100) -> list[DeadLetter]:
    start = after if after == "-" else "(" + after
    entries = client.xrange(dead_letter_stream, min=start, max="+", count=limit)
    ids = [entry_id for entry_id, _ in entries]
    replayed = client.hmget(redis_keys.dead_letters_replayed(dead_letter_stream), ids) if entries else []
    if entries and redis_keys.dead_letters_replayed(dead_letter_stream) != redis_keys.DEAD_LETTERS_REPLAYED:
        legacy = client.hmget(redis_keys.DEAD_LETTERS_REPLAYED, ids)
        replayed = [mark if mark is not None else old for mark, old in zip(replayed, legacy)]
    return [
        DeadLetter(
            id=entry_id.decode(),
            source_id=_text(fields.get(b"source_id")),
            reason=_text(fields.get(b"reason")) or "",
            dead_at_ms=int(fields[b"dead_at_ms"]) if b"dead_at_ms" in fields else None,
            events=events_in(fields),
            replayed_as=_text(again),
        )
        for (entry_id, fields), again in zip(entries, replayed)
    ]
