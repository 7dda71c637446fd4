"""The Redis side of the worker: the consumer group, reading, claiming, acking, dead-lettering
and trimming. Blocking redis-py calls; the worker is a plain process (or thread) per consumer."""

from __future__ import annotations

import logging
import time

import redis
from redis.exceptions import ResponseError

from shared.redis_conn import is_cluster, raw_name
from shared.redis_keys import StreamShard
from shared.rollup.protocol import RollupProtocol, is_rollup_group

log = logging.getLogger(__name__)

Fields = list[bytes] | dict[bytes, bytes] | None
"""An entry's fields: a flat [name, value, ...] list as Redis sent it (reads skip redis-py's
conversion to a dict, see ``_read_group``), a dict (claimed entries, tests), or None when the
entry's data was trimmed away after it was delivered."""
Entry = tuple[bytes, Fields]


class StreamConsumer:
    def __init__(
        self, client: redis.Redis, stream: str, group: str, consumer: str, dead_letter: str, shard: StreamShard | None = None
    ) -> None:
        """``shard``: the stream shard read (its keys); by default the one untagged ``stream``."""
        self.redis = client
        self.shard = shard or StreamShard(0, 1, stream, dead_letter, "")
        self.stream = self.shard.stream
        self.group = group
        self.consumer = consumer
        self.dead_letter_stream = self.shard.dead_letter
        self._claim_cursor: bytes | str = "0-0"
        self._xreadgroup = raw_name(client, b"XREADGROUP")
        self._cluster = is_cluster(client)

    def ensure_group(self) -> None:
        # "0": a group created after ingest started still gets everything already queued.
        create_group_at_start(self.redis, self.stream, self.group)

    def read_new(self, count: int, block_ms: int | None, as_consumer: str | None = None) -> list[Entry]:
        """Up to ``count`` entries never delivered before, now pending for ``as_consumer`` (a batch
        consumer, see ``batch_consumer``) or this consumer."""
        return self._read_group(">", count, block_ms, as_consumer)

    def request_new(self, count: int, as_consumer: str | None = None) -> PendingRead:
        """Ask for up to ``count`` new entries without waiting for them: Valkey prepares the reply
        while the caller works on the entries it has (``PendingRead.entries`` collects it). Never
        blocks, so a read sent ahead cannot hold a batch back on a quiet stream.

        From the moment it is sent, what it delivers is pending to this consumer: the caller
        must collect it before anything else reads this consumer's pending entries, or, if it
        cannot (an error on the way), let recovery find them there."""
        if self._cluster:
            # The cluster client owns its connections per node (and re-routes on a failover):
            # the read is made at once, without overlapping the caller's work.
            return PendingRead(None, None, self._read_group(">", count, None, as_consumer))
        connection = self.redis.connection_pool.get_connection()
        try:
            connection.send_command(
                b"XREADGROUP", b"GROUP", self.group, as_consumer or self.consumer, b"COUNT", count, b"STREAMS", self.stream, b">"
            )
        except BaseException:
            connection.disconnect()
            self.redis.connection_pool.release(connection)
            raise
        return PendingRead(self.redis.connection_pool, connection)

    def _read_group(self, start: bytes | str, count: int, block_ms: int | None, as_consumer: str | None = None) -> list[Entry]:
        args: list[bytes | str | int] = [b"GROUP", self.group, as_consumer or self.consumer, b"COUNT", count]
        if block_ms is not None:
            args += [b"BLOCK", block_ms]
        args += [b"STREAMS", self.stream, start]
        # redis-py finds its reply parser by the command name as a str; named in bytes, the reply
        # comes back as hiredis built it. Its parser turned every entry's fields into a dict in
        # pure Python: a fifth of the drain's time, for the one field the worker reads.
        return _entries_of(self.redis.execute_command(self._xreadgroup, *args))

    # ----- batch consumers ---------------------------------------------------------------
    # The worker reads each batch as a consumer of its own, named after this one. Its pending
    # entries are then exactly the batch: a restarted worker re-forms the batch from them, with
    # the same deduplication token, and acknowledges a stored batch by deleting that consumer
    # (XGROUP DELCONSUMER drops its pending entries from the group in one short command, where
    # XACK names every id: 5,000 ids cost Valkey ~1 ms more and the worker ~3 ms of packing).
    def batch_consumer(self, tag: str) -> str:
        return f"{self.consumer}{BATCH_CONSUMER_MARK}{tag}"

    def own_batch_consumers(self) -> list[tuple[str, int]]:
        """(name, pending entries) of the batch consumers this consumer left: batches read and
        not acknowledged before a stop, a crash or a Redis error."""
        prefix = self.consumer + BATCH_CONSUMER_MARK
        consumers = [(as_text(c["name"]), int(c["pending"])) for c in self.redis.xinfo_consumers(self.stream, self.group)]
        return sorted((name, pending) for name, pending in consumers if name.startswith(prefix))

    def read_pending_of(self, batch_consumer: str, count: int) -> list[Entry]:
        """A batch consumer's pending entries, oldest first (None fields: trimmed since delivery)."""
        return self._read_group(b"0", count, None, batch_consumer)

    def release_batch(self, batch_consumer: str) -> int:
        """Acknowledge every entry still pending for ``batch_consumer`` by deleting it; how many there were."""
        return int(self.redis.execute_command("XGROUP", "DELCONSUMER", self.stream, self.group, batch_consumer))

    def release_if_empty(self, batch_consumer: str) -> bool:
        """Delete ``batch_consumer`` if nothing is pending for it (checked and deleted at once)."""
        return bool(self.redis.eval(_RELEASE_IF_EMPTY, 1, self.stream, self.group, batch_consumer))

    def drop_idle_batch_consumers(self, idle_ms: int) -> int:
        """Delete batch consumers that hold nothing and were idle for ``idle_ms``: left by workers
        that died and whose entries others claimed. Checked and deleted in one script, so a
        consumer that a worker reads as in between cannot lose the entries it was just given."""
        return int(self.redis.eval(_DROP_IDLE_BATCH_CONSUMERS, 1, self.stream, self.group, BATCH_CONSUMER_MARK, idle_ms))

    def claim_stale(self, min_idle_ms: int, count: int, as_consumer: str) -> list[Entry]:
        """Take over entries a dead consumer left pending for longer than ``min_idle_ms``, as
        ``as_consumer`` (a batch consumer: what it claims is then exactly one batch).

        Continues from Redis's cursor between calls, so stale entries behind many live pending
        ones are reached; scans on until it finds some or the cursor wraps to "0-0"."""
        while True:
            reply = self.redis.xautoclaim(self.stream, self.group, as_consumer, min_idle_ms, self._claim_cursor, count=count)
            self._claim_cursor = reply[0] or "0-0"
            claimed = [(entry_id, fields) for entry_id, fields in (reply[1] if len(reply) > 1 else [])]
            if claimed or self._claim_cursor in ("0-0", b"0-0"):
                return claimed

    def delivery_counts(self, ids: list[bytes], as_consumer: str) -> dict[bytes, int]:
        if not ids:
            return {}
        rows = self.redis.xpending_range(
            self.stream, self.group, min=ids[0], max=ids[-1], count=len(ids) + 100, consumername=as_consumer
        )
        return {row["message_id"]: row["times_delivered"] for row in rows}

    def ack(self, ids: list[bytes]) -> None:
        if ids:
            self.redis.xack(self.stream, self.group, *ids)

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
        and at or below what it has been delivered. How far the results rollup lets the stream
        go is the rollup's to say (``RollupProtocol.trim_bound``)."""
        groups = self.redis.xinfo_groups(self.stream)
        bounds = [
            acknowledged_below(self.redis, self.stream, group) for group in groups if not is_rollup_group(as_text(group["name"]))
        ]
        protocol = RollupProtocol(self.redis, [self.shard], self.group)
        rollup_bound = protocol.trim_bound(groups, min(bounds, default=None), self.shard)
        if rollup_bound is not None:
            bounds.append(rollup_bound)
        if not bounds:
            return
        ms, seq = min(bounds)
        if (ms, seq) > (0, 0):
            self.redis.xtrim(self.stream, minid=f"{ms}-{seq}", approximate=False)


BATCH_CONSUMER_MARK = "#batch-"
"""Between a worker's consumer name and its batch's tag: ``w1#batch-3f9a0c1e-42``."""

_DROP_IDLE_BATCH_CONSUMERS = """
local dropped = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if string.find(info['name'], ARGV[2], 1, true) and info['pending'] == 0 and info['idle'] >= tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    dropped = dropped + 1
  end
end
return dropped
"""

_RELEASE_IF_EMPTY = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class PendingRead:
    """An XREADGROUP sent and not yet answered, on a connection of its own until it is."""

    def __init__(self, pool: redis.ConnectionPool | None, connection: redis.Connection | None, done: list | None = None) -> None:
        self._pool = pool
        self._connection: redis.Connection | None = connection
        self._done = done

    def entries(self) -> list[Entry]:
        if self._done is not None:
            done, self._done = self._done, None
            return done
        connection, self._connection = self._connection, None
        assert connection is not None, "a read is collected once"
        try:
            reply = connection.read_response()
        except BaseException:
            # The reply may be half read: the connection cannot serve another command.
            connection.disconnect()
            raise
        finally:
            assert self._pool is not None
            self._pool.release(connection)
        return _entries_of(reply)


def _entries_of(reply: list | dict | None) -> list[Entry]:
    """The entries of an XREADGROUP reply on one stream, as hiredis built it."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3: {stream: entries}
        return next(iter(reply.values()))
    return reply[0][1]  # RESP2: [[stream, entries]]


def create_group_at_start(client: redis.Redis, stream: str, group: str) -> bool:
    """Create ``group`` at the stream's start (and the stream if need be); False if it existed."""
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
        return False
    return True


def acknowledged_below(client: redis.Redis, stream: str, group: dict) -> tuple[int, int]:
    """The id below which a group (as XINFO GROUPS describes it) has acknowledged every entry:
    its oldest pending entry, else just past what it was delivered."""
    if group["pending"]:
        summary = client.xpending(stream, group["name"])
        # Another consumer may have acked the last pending entries since XINFO: then
        # everything up to the last-delivered id read by XINFO is acknowledged.
        if summary["min"] is not None:
            return id_key(summary["min"])
    ms, seq = id_key(group["last-delivered-id"])
    return ms, seq + 1


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def field_dict(fields: Fields) -> dict[bytes, bytes]:
    if isinstance(fields, list):
        return dict(zip(fields[::2], fields[1::2]))
    return dict(fields or {})


def id_key(entry_id: bytes | str) -> tuple[int, int]:
    """An entry id as a tuple that sorts as Redis orders ids ("(" of an exclusive bound ignored)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.lstrip("(").partition("-")
    return int(ms), int(seq or 0)
