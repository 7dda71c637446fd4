"""Dead letters: listing them with their reasons, and replaying them to the stream after a fix.

A replayed entry goes back to the stream as it arrived (its ``e`` field, without the dead-letter
annotations) under a new id; the workers then store it like any other, and ``abacus.events``
collapses any event of it that was stored before by ``event_id``, so a replayed event counts
once. The dead letter itself stays, marked as replayed in one Lua script with the XADD: a replay
that runs again (rq retrying, an operator clicking twice) appends nothing twice, and the roller,
which skips the dead-lettered source entries by reading this stream, still finds them.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis

from jobs.progress import report
from shared import redis_keys
from shared.dead_letter_list import events_in

_ANNOTATIONS = {b"source_id", b"reason", b"dead_at_ms"}
_REPLAY = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return false end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('HSET', KEYS[2], ARGV[1], id)
return id
"""
_CHUNK = 500


def _selected(client: redis.Redis, dead_letter_stream: str, ids: list[str] | None) -> Iterator[tuple[bytes, dict]]:
    if ids is not None:
        for entry_id in ids:
            found = client.xrange(dead_letter_stream, min=entry_id, max=entry_id, count=1)
            yield (found[0] if found else (entry_id.encode(), {}))
        return
    after = "-"
    while True:
        chunk = client.xrange(dead_letter_stream, min=after, max="+", count=_CHUNK)
        if after != "-":
            chunk = chunk[1:]
        if not chunk:
            return
        yield from chunk
        after = chunk[-1][0].decode()


def replay(client: redis.Redis, stream: str, dead_letter_stream: str, ids: list[str] | None, dry_run: bool) -> dict:
    """Replay ``ids`` (None: every dead letter). Returns what was (or, dry, would be) replayed,
    what had been replayed before, and what was not found."""
    script = client.register_script(_REPLAY)
    replayed: list[dict] = []
    already: list[str] = []
    missing: list[str] = []
    events = 0
    marks = redis_keys.dead_letters_replayed(dead_letter_stream)
    legacy = marks != redis_keys.DEAD_LETTERS_REPLAYED  # marks a replay before per-shard hashes left

    def replayed_before(entry_id: bytes) -> bool:
        return bool(client.hexists(marks, entry_id) or (legacy and client.hexists(redis_keys.DEAD_LETTERS_REPLAYED, entry_id)))

    for seen, (entry_id, fields) in enumerate(_selected(client, dead_letter_stream, ids), start=1):
        dead_id = entry_id.decode()
        if not fields:
            missing.append(dead_id)
            continue
        original = [part for name, data in fields.items() if name not in _ANNOTATIONS for part in (name, data)]
        if not original:
            missing.append(dead_id)  # nothing of the entry was kept (it had no fields)
            continue
        if (dry_run or legacy) and replayed_before(entry_id):
            already.append(dead_id)
            continue
        if dry_run:
            replayed.append({"id": dead_id, "as": None})
            events += events_in(fields) or 0
            continue
        # The stream and the marks share the shard's slot: one script, legal on a Redis Cluster.
        new_id = script(keys=[stream, marks], args=[entry_id, *original])
        if new_id is None:
            already.append(dead_id)
        else:
            replayed.append({"id": dead_id, "as": new_id.decode()})
            events += events_in(fields) or 0
        if seen % 100 == 0:
            report(done=seen)
    report(done=len(replayed) + len(already) + len(missing))
    return {"dry_run": dry_run, "replayed": replayed, "events": events, "already_replayed": already, "missing": missing}
