"""The Redis side of the worker: the consumer group, reading, claiming, acking, dead-lettering
and trimming. Blocking redis-py calls; the worker is a plain process (or thread) per consumer."""

from __future__ import annotations

import logging
import time

import redis
from redis.exceptions import ResponseError

from shared import redis_keys
from worker.rollup_stream import abandon_rollup_if_unattended

log = logging.getLogger(__name__)

Fields = list[bytes] | dict[bytes, bytes] | None
"""An entry's fields: a flat [name, value, ...] list as Redis sent it (reads skip redis-py's
conversion to a dict, see ``_read_group``), a dict (claimed entries, tests), or None when the
entry's data was trimmed away after it was delivered."""
Entry = tuple[bytes, Fields]


class StreamConsumer:
    def __init__(self, client: redis.Redis, stream: str, group: str, consumer: str, dead_letter: str) -> None:
        self.redis = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.dead_letter_stream = dead_letter
        self._claim_cursor: bytes | str = "0-0"

    def ensure_group(self) -> None:
        try:
            # "0": a group created after ingest started still gets everything already queued.
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_new(self, count: int, block_ms: int | None) -> list[Entry]:
        return self._read_group(">", count, block_ms)

    def read_own_pending(self, after: bytes, count: int) -> list[Entry]:
        """Entries delivered to this consumer and not acknowledged (after a crash or a failed batch)."""
        return self._read_group(after, count, None)

    def _read_group(self, start: bytes | str, count: int, block_ms: int | None) -> list[Entry]:
        args: list[bytes | str | int] = [b"GROUP", self.group, self.consumer, b"COUNT", count]
        if block_ms is not None:
            args += [b"BLOCK", block_ms]
        args += [b"STREAMS", self.stream, start]
        # redis-py finds its reply parser by the command name as a str; named in bytes, the reply
        # comes back as hiredis built it. Its parser turned every entry's fields into a dict in
        # pure Python: a fifth of the drain's time, for the one field the worker reads.
        reply = self.redis.execute_command(b"XREADGROUP", *args)
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3: {stream: entries}
            return next(iter(reply.values()))
        return reply[0][1]  # RESP2: [[stream, entries]]

    def claim_stale(self, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries a dead consumer left pending for longer than ``min_idle_ms``.

        Continues from Redis's cursor between calls, so stale entries behind many live pending
        ones are reached; scans on until it finds some or the cursor wraps to "0-0"."""
        while True:
            reply = self.redis.xautoclaim(self.stream, self.group, self.consumer, min_idle_ms, self._claim_cursor, count=count)
            self._claim_cursor = reply[0] or "0-0"
            claimed = [(entry_id, fields) for entry_id, fields in (reply[1] if len(reply) > 1 else [])]
            if claimed or self._claim_cursor in ("0-0", b"0-0"):
                return claimed

    def delivery_counts(self, ids: list[bytes]) -> dict[bytes, int]:
        if not ids:
            return {}
        rows = self.redis.xpending_range(
            self.stream, self.group, min=ids[0], max=ids[-1], count=len(ids) + 100, consumername=self.consumer
        )
        return {row["message_id"]: row["times_delivered"] for row in rows}

    def ack(self, ids: list[bytes]) -> None:
        if ids:
            self.redis.xack(self.stream, self.group, *ids)

    def ack_batch(self, ids: list[bytes], marker: str) -> None:
        """Acknowledge a stored batch and drop its in-flight marker in one round trip; MULTI, so a
        marker never outlives its batch's acknowledgement, nor goes before it."""
        pipe = self.redis.pipeline(transaction=True)
        if ids:
            pipe.xack(self.stream, self.group, *ids)
        pipe.delete(marker)
        pipe.execute()

    def dead_letter(self, entry_id: bytes, fields: dict | None, reason: str) -> None:
        """Park an entry for inspection and replay, then ack it so the rest keep flowing."""
        payload = field_dict(fields)
        payload.update({b"source_id": entry_id, b"reason": reason.encode()[:2000], b"dead_at_ms": int(time.time() * 1000)})
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(self.dead_letter_stream, payload)
        pipe.xack(self.stream, self.group, entry_id)
        pipe.execute()

    def trim_acknowledged(self) -> None:
        """Delete only entries every group has acknowledged: below each group's oldest pending entry
        and at or below what it has been delivered."""
        bounds = []
        for group in self.redis.xinfo_groups(self.stream):
            if _name(group["name"]) == redis_keys.ROLLUP_GROUP and abandon_rollup_if_unattended(self.redis, self.stream):
                log.warning("no roller has run for minutes: trimming no longer waits for the results rollup")
                continue
            if group["pending"]:
                summary = self.redis.xpending(self.stream, group["name"])
                # Another consumer may have acked the last pending entries since XINFO: then
                # everything up to the last-delivered id read by XINFO is acknowledged.
                if summary["min"] is not None:
                    bounds.append(_parse_id(summary["min"]))
                    continue
            ms, seq = _parse_id(group["last-delivered-id"])
            bounds.append((ms, seq + 1))
        if not bounds:
            return
        ms, seq = min(bounds)
        if (ms, seq) > (0, 0):
            self.redis.xtrim(self.stream, minid=f"{ms}-{seq}", approximate=False)


def _name(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def field_dict(fields: Fields) -> dict[bytes, bytes]:
    if isinstance(fields, list):
        return dict(zip(fields[::2], fields[1::2]))
    return dict(fields or {})


def id_key(entry_id: bytes | str) -> tuple[int, int]:
    """An entry id as a tuple that sorts as Redis orders ids."""
    return _parse_id(entry_id)


def _parse_id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)
