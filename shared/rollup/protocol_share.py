"""One rollup share's state in Redis, as its roller sees and changes it: its lock, whether and
when it was built, its bookmark on each stream shard and the step in hand.

Part of the rollup protocol: only ``RollupProtocol.share()`` (shared/rollup/protocol.py) makes
these, and nothing outside the two modules touches the keys."""

from __future__ import annotations

import time

import redis
from redis.exceptions import ResponseError

from shared import redis_keys
from shared.redis_keys import StreamShard
from shared.rollup.protocol_ids import rebuild_wanted, text

ALIVE_GRACE_MS = 300_000
"""A share whose roller has not run for this long is abandoned: trimming stops waiting for it."""


# Take the lock when free, keep it when ours, and say the share is alive; one round trip.
# 2 means newly taken: whatever this process remembers may be stale (another roller ran meanwhile).
_ACQUIRE_LOCK = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
if holder then
  return 1
end
return 2
"""
# Only extend a lock still ours: the renewing thread must never take a lapsed one.
_RENEW_LOCK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return 1
"""
_RELEASE_LOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class Share:
    """One share's state as its roller sees and changes it."""

    def __init__(self, client: redis.Redis, streams: list[StreamShard], shard: int, shards: int) -> None:
        self.redis = client
        self.streams = streams
        self.shard, self.shards = shard, shards
        self.group = redis_keys.rollup_group(shard, shards)
        self.tagged = bool(streams[0].tag)
        self.lock_key = redis_keys.rollup_share_key("lock", shard, shards, self.tagged)
        self._alive = redis_keys.rollup_share_key("alive", shard, shards, self.tagged)
        self._built = redis_keys.rollup_share_key(redis_keys.ROLLUP_BUILT, shard, shards, self.tagged)
        self._steps = [stream.rollup_step(shard, shards) for stream in streams]
        self._acquire = client.register_script(_ACQUIRE_LOCK)
        self._renew = client.register_script(_RENEW_LOCK)
        self._release = client.register_script(_RELEASE_LOCK)

    # the lock
    def hold(self, owner: str, ttl_ms: int) -> int:
        """0: another process holds it; 1: kept; 2: newly taken."""
        return int(self._acquire(keys=[self.lock_key, self._alive], args=[owner, ttl_ms, ALIVE_GRACE_MS]))

    def renew(self, owner: str, ttl_ms: int) -> bool:
        return bool(self._renew(keys=[self.lock_key, self._alive], args=[owner, ttl_ms, ALIVE_GRACE_MS]))

    def release(self, owner: str) -> None:
        self._release(keys=[self.lock_key], args=[owner])

    def holds(self, owner: str) -> bool:
        return self.redis.get(self.lock_key) == owner.encode()

    # built and rebuilds
    def generation(self) -> str | None:
        """The generation (completion time of its last rebuild) of a built share; None when it
        must be rebuilt: never built, given up on, or a rebuild was requested since."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self._built)
        pipe.get(redis_keys.ROLLUP_REBUILD)
        built, requested = pipe.execute()
        if not built or rebuild_wanted(requested, built):
            return None
        return built.split(b" ")[0].decode()

    def begin_rebuild(self) -> int:
        """Forget the built state and bookmark the stream's start (so nothing is trimmed that the
        rebuild's snapshot might miss), on every stream shard; the rebuild request number this
        rebuild serves. (A request made after it was read starts another rebuild.)"""
        requested = self.redis.get(redis_keys.ROLLUP_REBUILD)
        for key in (self._built, *self._steps):
            self.redis.delete(key)  # one by one: on a cluster they are in different slots
        for stream in self.streams:
            try:
                self.redis.xgroup_create(stream.stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
                self.redis.xgroup_setid(stream.stream, self.group, id="0")
        return int(requested or 0)

    def finish_rebuild(self, served: int) -> str:
        generation = str(int(time.time() * 1000))
        self.redis.set(self._built, f"{generation} {served}")
        return generation

    # the bookmark and the step in hand
    def bookmark(self, stream: int = 0) -> bytes | None:
        """How far the share is folded in stream shard ``stream``."""
        try:
            groups = self.redis.xinfo_groups(self.streams[stream].stream)
        except ResponseError:
            return None
        for group in groups:
            if text(group["name"]) == self.group:
                last = group["last-delivered-id"]
                return last if isinstance(last, bytes) else last.encode()
        return None

    def step_in_hand(self, stream: int = 0) -> tuple[bytes, bytes] | None:
        raw = self.redis.get(self._steps[stream])
        if not raw:
            return None
        start, _, end = raw.partition(b" ")
        return start, end

    def begin_step(self, start: bytes, end: bytes, stream: int = 0) -> None:
        self.redis.set(self._steps[stream], start + b" " + end)

    def finish_step(self, end: bytes, stream: int = 0) -> None:
        # The step key carries its stream shard's hash tag: one slot, so one transaction.
        pipe = self.redis.pipeline(transaction=True)
        pipe.xgroup_setid(self.streams[stream].stream, self.group, id=end)
        pipe.delete(self._steps[stream])
        pipe.execute()
