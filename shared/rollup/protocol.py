"""The results rollup's protocol and state, owned here: nothing else reads or writes its keys.

Experiments are split into ``shards`` shares by a hash of experiment_key (``shard_of``); each share is folded
by one roller at a time (a lock per share) and has its own bookmark (a consumer group on the
stream that only marks how far the share is folded). This module answers the three questions the
rest of Abacus asks:

- the query API: *how fresh is the rollup for these experiments?* (``freshness``), measured at
  the moment of asking against what the workers may have stored: every entry delivered to the
  workers' group, pending ones included, since a worker may have inserted a batch and died
  before acknowledging it. Nothing is inferred from a roller's report, which a dead roller
  leaves behind stale;
- worker trimming: *up to where may the stream be trimmed?* (``trim_bound``), giving up on a
  share nobody folds any more or whose backlog grew too old, judged by the oldest entry it
  actually holds back (none, on an idle or empty stream: nothing to give up on);
- the roller: its lock, bookmark, step in hand and rebuild requests (``Share``, in
  shared/rollup/protocol_share.py; names and ids in shared/rollup/protocol_ids.py);
- operators (``abacus status``, /metrics, the nightly verification): how many rollers run
  (``rollers_running``) and what the last verification found (``record_verification``,
  ``last_verification``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import msgspec
import redis
from redis.exceptions import ResponseError

from shared import redis_keys
from shared.redis_conn import raw_name
from shared.redis_keys import StreamShard
from shared.rollup.protocol_ids import id_key, is_rollup_group, parse_group, rebuild_wanted, shard_of, text
from shared.rollup.protocol_share import ALIVE_GRACE_MS, Share

log = logging.getLogger(__name__)

__all__ = [
    "ALIVE_GRACE_MS",
    "Freshness",
    "RollupProtocol",
    "Share",
    "id_key",
    "is_rollup_group",
    "last_verification",
    "record_verification",
    "rollers_running",
    "shard_of",
]

MAX_BACKLOG_MS = 600_000
"""A share holding back an entry this much older than the workers' position is given up on (it
rebuilds from the events), so the stream cannot grow until Redis refuses writes."""
FRESHNESS_SCAN_ENTRIES = 20_000
"""At most this many unfolded entries are read to count the events a rollup answer lacks; beyond,
the gap is not measured exactly and results come from the events."""
_SCAN_CHUNK = 2_000


class _EventKey(msgspec.Struct, array_like=True):
    event_id: str
    experiment_key: str


class _EnvelopeKeys(msgspec.Struct):
    events: list[_EventKey]


_keys_decoder = msgspec.msgpack.Decoder(_EnvelopeKeys)


class Freshness(msgspec.Struct, frozen=True):
    """How current the rollup is for some experiments, measured when asked."""

    current: bool
    """Built, folded by a running roller, and everything the workers may have stored more than
    ``max_lag_ms`` ago is folded, with the gap below measured exactly: results may come from it."""
    built: bool
    roller_running: bool
    rebuild_requested: bool
    unfolded_events: int
    """Events of these experiments the workers have stored (or are storing) that the rollup has
    not folded yet; a lower bound when ``unfolded_exact`` is false."""
    unfolded_exact: bool
    behind_ms: int
    """Age of the oldest such event (0 when there is none)."""
    max_lag_ms: int


@dataclass
class _Groups:
    workers_delivered: bytes | None
    bookmarks: dict[str, bytes]


class RollupProtocol:
    def __init__(
        self, client: redis.Redis, stream: str | list[StreamShard], worker_group: str, shards: int = 1, max_lag_ms: int = 10_000
    ) -> None:
        """``stream``: the one untagged stream, or every stream shard (``redis_keys.stream_shards``)."""
        self.redis = client
        self.streams = [StreamShard(0, 1, stream, "", "")] if isinstance(stream, str) else stream
        self.stream = self.streams[0].stream
        self.worker_group = worker_group
        self.shards = max(1, shards)
        self.max_lag_ms = max_lag_ms
        self.tagged = bool(self.streams[0].tag)

    def share(self, shard: int) -> Share:
        return Share(self.redis, self.streams, shard, self.shards)

    def _share_key(self, name: str, shard: int, shards: int) -> str:
        return redis_keys.rollup_share_key(name, shard, shards, self.tagged)

    # ----- asked by the query API -------------------------------------------------------------
    def freshness(self, experiment_keys: list[str]) -> Freshness:
        shares = sorted({shard_of(key, self.shards) for key in experiment_keys}) or [0]
        pipe = self.redis.pipeline(transaction=False)
        pipe.time()
        pipe.get(redis_keys.ROLLUP_REBUILD)
        for shard in shares:
            pipe.get(self._share_key(redis_keys.ROLLUP_BUILT, shard, self.shards))
            pipe.exists(self._share_key("lock", shard, self.shards))
        now, requested, *per_share = pipe.execute()
        now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
        per_stream = [(stream, self._groups(stream.stream)) for stream in self.streams]
        built = running = True
        rebuild = False
        unfolded, exact, oldest_ms = 0, True, None
        wanted = set(experiment_keys)
        for index, shard in enumerate(shares):
            built_value, locked = per_share[2 * index], per_share[2 * index + 1]
            built = built and bool(built_value)
            running = running and bool(locked)
            rebuild = rebuild or rebuild_wanted(requested, built_value)
            for stream, groups in per_stream:
                bookmark = groups.bookmarks.get(redis_keys.rollup_group(shard, self.shards))
                built = built and bookmark is not None
                if bookmark is None or groups.workers_delivered is None:
                    continue
                count, share_exact, share_oldest = self._unfolded(stream.stream, bookmark, groups.workers_delivered, wanted)
                unfolded += count
                exact = exact and share_exact
                if share_oldest is not None:
                    oldest_ms = share_oldest if oldest_ms is None else min(oldest_ms, share_oldest)
        behind_ms = max(0, now_ms - oldest_ms) if oldest_ms is not None else 0
        current = built and running and not rebuild and exact and behind_ms <= self.max_lag_ms
        return Freshness(current, built, running, rebuild, unfolded, exact, behind_ms, self.max_lag_ms)

    def request_rebuild(self) -> None:
        self.redis.incr(redis_keys.ROLLUP_REBUILD)

    def _groups(self, stream: str) -> _Groups:
        try:
            groups = self.redis.xinfo_groups(stream)
        except ResponseError:
            groups = []  # no stream yet
        delivered, bookmarks = None, {}
        for group in groups:
            name = text(group["name"])
            last = group["last-delivered-id"]
            last = last if isinstance(last, bytes) else last.encode()
            if name == self.worker_group:
                delivered = last
            elif is_rollup_group(name):
                bookmarks[name] = last
        return _Groups(delivered, bookmarks)

    def _unfolded(self, stream: str, bookmark: bytes, delivered: bytes, wanted: set[str]) -> tuple[int, bool, int | None]:
        """Events of ``wanted`` experiments in entries after ``bookmark`` up to what the workers
        were delivered; whether all such entries were read; the oldest such entry's time (ms)."""
        count, oldest, read = 0, None, 0
        after = bookmark
        if id_key(after) >= id_key(delivered):
            return 0, True, None
        while read < FRESHNESS_SCAN_ENTRIES:
            entries = (
                self.redis.execute_command(
                    raw_name(self.redis, b"XRANGE"), stream, b"(" + after, delivered, b"COUNT", _SCAN_CHUNK
                )
                or []
            )
            for entry_id, fields in entries:
                events = _events_of(fields)
                mine = sum(1 for event in events if event.experiment_key in wanted)
                if mine:
                    count += mine
                    if oldest is None:
                        oldest = id_key(entry_id)[0]
            read += len(entries)
            if len(entries) < _SCAN_CHUNK:
                return count, True, oldest
            after = entries[-1][0]
        return count, False, oldest if oldest is not None else id_key(after)[0]

    # ----- asked by worker trimming -----------------------------------------------------------
    def trim_bound(
        self, groups: list[dict], others_bound: tuple[int, int] | None, stream: StreamShard | None = None
    ) -> tuple[int, int] | None:
        """The id below which every live share has folded (None: no share holds the stream back).
        A share nobody has folded for ``ALIVE_GRACE_MS``, or whose oldest unfolded entry is more
        than ``MAX_BACKLOG_MS`` older than ``others_bound`` (what the workers still hold back), is
        dropped: its bookmark goes, so trimming no longer waits, and its next roller rebuilds.
        ``groups``: those of ``stream`` (a stream shard; the first by default)."""
        stream = stream or self.streams[0]
        bound = None
        for group in groups:
            name = text(group["name"])
            if not is_rollup_group(name):
                continue
            shard, shards = parse_group(name)
            last = id_key(group["last-delivered-id"])
            if not self.redis.exists(self._share_key("alive", shard, shards)):
                self._drop(stream, name, shard, shards, "no roller has folded it for minutes")
                continue
            held = self.redis.execute_command(
                raw_name(self.redis, b"XRANGE"), stream.stream, f"({last[0]}-{last[1]}", b"+", b"COUNT", 1
            )
            if held and others_bound is not None:
                behind_ms = others_bound[0] - id_key(held[0][0])[0]
                if behind_ms > MAX_BACKLOG_MS:
                    self._drop(stream, name, shard, shards, f"its roller is {behind_ms // 1000} s behind the workers")
                    continue
            own = (last[0], last[1] + 1)
            bound = own if bound is None else min(bound, own)
        return bound

    def _drop(self, stream: StreamShard, group: str, shard: int, shards: int, why: str) -> None:
        log.warning("trimming no longer waits for rollup share %s: %s", group, why)
        if not self.tagged:
            pipe = self.redis.pipeline(transaction=True)
            pipe.xgroup_destroy(stream.stream, group)
            pipe.delete(redis_keys.rollup_shard_key(redis_keys.ROLLUP_BUILT, shard, shards), stream.rollup_step(shard, shards))
            pipe.execute()
            return
        # The keys are in different slots: built goes first, so whatever happens next, the
        # share's next roller rebuilds (and re-creates this bookmark at the stream's start).
        self.redis.delete(self._share_key(redis_keys.ROLLUP_BUILT, shard, shards))
        pipe = self.redis.pipeline(transaction=True)
        pipe.xgroup_destroy(stream.stream, group)
        pipe.delete(stream.rollup_step(shard, shards))
        pipe.execute()

    # ----- roller membership ------------------------------------------------------------------
    def heartbeat(self, owner: str, ttl_ms: int) -> int:
        """Say this roller runs for ``ttl_ms`` more; how many rollers run now (this one included)."""
        now_ms = int(time.time() * 1000)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(redis_keys.ROLLUP_ROLLERS, {owner: now_ms + ttl_ms})
        pipe.zremrangebyscore(redis_keys.ROLLUP_ROLLERS, 0, now_ms)
        pipe.zcard(redis_keys.ROLLUP_ROLLERS)
        return max(1, int(pipe.execute()[-1]))

    def leave(self, owner: str) -> None:
        self.redis.zrem(redis_keys.ROLLUP_ROLLERS, owner)


# ----- asked by operators ---------------------------------------------------------------------
def rollers_running(client: redis.Redis, now_ms: int) -> int:
    """Roller processes whose heartbeat has not expired at ``now_ms`` (Redis's clock)."""
    return int(client.zcount(redis_keys.ROLLUP_ROLLERS, now_ms, "+inf"))


def record_verification(client: redis.Redis, outcome: dict) -> None:
    """Keep the last verification's outcome (``at``, ``variants_checked``, ``mismatches``)."""
    client.set(redis_keys.ROLLUP_VERIFICATION, json.dumps(outcome))


def last_verification(client: redis.Redis) -> dict | None:
    """The last verification's outcome, None before the first."""
    value = client.get(redis_keys.ROLLUP_VERIFICATION)
    return json.loads(value) if value is not None else None


def _events_of(fields: list | dict | None) -> list[_EventKey]:
    if not fields:
        return []
    raw = fields.get(b"e") if isinstance(fields, dict) else dict(zip(fields[::2], fields[1::2])).get(b"e")
    if raw is None:
        return []
    try:
        return _keys_decoder.decode(raw).events
    except (msgspec.DecodeError, msgspec.ValidationError):
        return []  # poison: the workers dead-letter it, it is never stored
