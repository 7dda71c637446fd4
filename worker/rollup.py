"""The roller: folds the stream, in order, into per-variant totals the results endpoint reads.

One roller runs at a time (a Redis lock elects it among the worker processes). It reads only
entries the workers have already stored in ClickHouse, so the totals never count what
``abacus.events`` does not hold; it skips dead-lettered entries for the same reason. Per step:

1. record the stream range it is about to fold (so a crash redoes exactly that range);
2. load the touched sessions' states (a cache, else ``abacus.rollup_sessions``) and apply the events;
3. insert ``contribution(after) - contribution(before)`` per variant, then the new states, each
   under a token named after the range: a redone step that already reached ClickHouse is dropped;
4. move its bookmark past the range.

A redone step sees the prior states again only if step 3's second insert never landed, and then
its first insert is a duplicate dropped by token; if both landed, the events are already in the
states and change nothing. Either way nothing is counted twice.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator

import msgspec
import redis
from clickhouse_connect.driver.exceptions import ClickHouseError
from redis.exceptions import RedisError

from shared import redis_keys
from shared.clickhouse import ClickHouse
from shared.rollup.known_sessions import KnownSessions
from shared.rollup.session import SessionState, add_difference, is_zero
from shared.wire import StreamEnvelope
from worker import rollup_store
from worker.rollup_stream import RollupStream
from worker.rows import envelope_bytes
from worker.stream import Entry, id_key

log = logging.getLogger(__name__)

_LOCK_TTL_MS = 10_000
# Larger steps share ClickHouse's per-insert cost among more events; bounded so a step's memory is.
_EVENTS_PER_STEP = 50_000
_MAX_ENTRIES_PER_STEP = 20_000
_MOST_EVENTS_PER_ENTRY = 500  # ingest's cap on the events it packs into one stream entry
_MAX_BACKOFF_S = 30.0
_decoder = msgspec.msgpack.Decoder(StreamEnvelope)

# A roller gone this long is taken for abandoned: trimming stops waiting for it (see redis_keys).
_ALIVE_GRACE_MS = 300_000

# Take the lock when free, keep it when ours, and say the rollup is alive; one round trip.
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


class LostLock(RedisError):
    """Another process holds the roller lock now; this step must not write."""


class SessionCache:
    """The most recently touched session states, bounded: the rest are looked up in ClickHouse."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._states: OrderedDict[tuple[str, str], SessionState] = OrderedDict()

    def get(self, key: tuple[str, str]) -> SessionState | None:
        state = self._states.get(key)
        if state is not None:
            self._states.move_to_end(key)
        return state

    def put(self, key: tuple[str, str], state: SessionState) -> None:
        self._states[key] = state
        self._states.move_to_end(key)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def clear(self) -> None:
        self._states.clear()

    def __len__(self) -> int:
        return len(self._states)


class Roller:
    def __init__(self, stream: RollupStream, clickhouse: ClickHouse, cache_sessions: int, idle_wait_ms: int) -> None:
        self.stream = stream
        self.redis: redis.Redis = stream.redis
        self.clickhouse = clickhouse
        self.cache = SessionCache(cache_sessions)
        self.idle_wait_s = idle_wait_ms / 1000
        self.stopping = threading.Event()
        self.folded_events = 0
        self._owner = f"{uuid.uuid4().hex}"
        self._acquire_lock = self.redis.register_script(_ACQUIRE_LOCK)
        self._renew_lock = self.redis.register_script(_RENEW_LOCK)
        self._release_lock = self.redis.register_script(_RELEASE_LOCK)
        self._holding = False
        self._bookmark: bytes | None = None
        self._dead: set[bytes] = set()
        self._known: KnownSessions | None = None
        # Assume full entries until a step has shown otherwise: the first step stays small
        # instead of reading _MAX_ENTRIES_PER_STEP entries that could each be full.
        self._events_per_entry = float(_MOST_EVENTS_PER_ENTRY)

    def request_stop(self) -> None:
        self.stopping.set()

    def run(self, until_caught_up: bool = False) -> None:
        """Fold the stream until asked to stop (or, with ``until_caught_up``, until nothing is left
        that the workers have stored). Waits as a standby while another process holds the lock."""
        backoff = 0.5
        renewing_done = threading.Event()
        renewer = threading.Thread(target=self._keep_lock, args=(renewing_done,), name="abacus-rollup-lock", daemon=True)
        renewer.start()
        try:
            while not self.stopping.is_set():
                try:
                    worked = self.run_once()
                    backoff = 0.5
                    if not worked:
                        if until_caught_up and self._holding:
                            return
                        self.stopping.wait(self.idle_wait_s)
                    continue
                except (RedisError, OSError, ClickHouseError) as exc:
                    log.warning("rollup step failed (%s); retrying in %.1fs", exc, backoff)
                except Exception:
                    # A bug must not silently end the rollup: results would quietly fall back to
                    # the slow path. Log it loudly and keep trying, like any other failure.
                    log.exception("rollup step failed; retrying in %.1fs", backoff)
                self._forget()  # after a failure, what ClickHouse holds is the truth
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
        finally:
            renewing_done.set()
            renewer.join()  # before releasing: it would otherwise take the free lock again
            self._release()

    def run_once(self) -> bool:
        """One step if this process is (or becomes) the roller; True when it folded something."""
        if not self._hold():
            return False
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(redis_keys.ROLLUP_REBUILD)
        pipe.get(redis_keys.ROLLUP_READY)
        rebuild_requested, built_at = pipe.execute()
        if self._bookmark is None or rebuild_requested or not built_at:
            self._bookmark = self.stream.bookmark()
            # Not built also covers a rebuild that failed half-way: it must run again.
            if self._bookmark is None or rebuild_requested or not built_at:
                built_at = self.rebuild()
        return self._step(generation=built_at.decode() if isinstance(built_at, bytes) else str(built_at))

    # ----- the lock ------------------------------------------------------------------------
    def _hold(self) -> bool:
        taken = self._acquire_lock(keys=self._lock_keys, args=[self._owner, _LOCK_TTL_MS, _ALIVE_GRACE_MS])
        if taken == 2 or (taken and not self._holding):
            log.info("this process now folds the stream into the results rollup")
            self._new_tenure()
        self._holding = bool(taken)
        return self._holding

    @property
    def _lock_keys(self) -> list[str]:
        return [redis_keys.ROLLUP_LOCK, redis_keys.ROLLUP_ALIVE]

    def _release(self) -> None:
        if not self._holding:
            return
        try:
            self._release_lock(keys=[redis_keys.ROLLUP_LOCK], args=[self._owner])
        except RedisError:
            pass  # it expires on its own
        self._holding = False

    def _keep_lock(self, done: threading.Event) -> None:
        """Renew the lock every third of its lifetime while this process holds it, so a step or a
        rebuild whose ClickHouse statements run long does not let it lapse (run()'s thread)."""
        while not done.wait(_LOCK_TTL_MS / 3000):
            if not self._holding:
                continue
            try:
                if not self._renew_lock(keys=self._lock_keys, args=[self._owner, _LOCK_TTL_MS, _ALIVE_GRACE_MS]):
                    self._holding = False  # taken over; the next step notices and stands by
            except RedisError:
                pass  # the step itself will fail on the same outage and back off

    def _forget(self) -> None:
        """After a failed step: re-read the bookmark and the session states, as ClickHouse and
        Redis hold them, before the next step."""
        self.cache.clear()
        self._bookmark = None

    def _new_tenure(self) -> None:
        """Another roller may have run since this process last held the lock: forget everything."""
        self._forget()
        self._known = None
        self._dead.clear()
        self.stream.reread_dead_letters()

    def _known_sessions(self) -> KnownSessions:
        """The filter of stored sessions, built from ClickHouse when missing or overfull."""
        if self._known is None or self._known.overfull:
            started = time.monotonic()
            client = self.clickhouse.client()
            sessions = client.query(
                f"SELECT uniqExact(experiment_key, session_id) FROM {rollup_store.SESSIONS_TABLE}"
            ).result_rows[0][0]
            # Room to grow: rebuilt (larger) only once it holds about four times this many.
            known = KnownSessions(2 * sessions + 100_000)

            def add_block(experiment_keys: list[str], session_ids: list[str]) -> None:
                for key in zip(experiment_keys, session_ids):
                    known.add(*key)

            rollup_store.stored_session_keys(client, add_block)
            log.info("indexed %d stored rollup sessions in %.1fs", sessions, time.monotonic() - started)
            self._known = known
        return self._known

    # ----- rebuild -------------------------------------------------------------------------
    def rebuild(self) -> bytes:
        """Recompute the rollup from abacus.events, then refold whatever is still in the stream;
        returns the rebuild's generation (its completion time), which names its steps' tokens.

        The bookmark moves to the stream's start first, so nothing is trimmed that the snapshot
        might miss; refolded events the snapshot already holds change nothing (same event ids)."""
        log.info("rebuilding the results rollup from abacus.events")
        started = time.monotonic()
        # Take the request now, not when done: one made while this rebuild runs must start another.
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(redis_keys.ROLLUP_READY, redis_keys.ROLLUP_REBUILD, redis_keys.ROLLUP_BEHIND_MS)
        pipe.execute()
        self.stream.restart_bookmark()
        self.redis.delete(redis_keys.ROLLUP_STEP)
        self.cache.clear()
        self._known = None
        self._dead.clear()
        self.stream.reread_dead_letters()
        rollup_store.rebuild_from_events(self.clickhouse.client())
        self._bookmark = b"0-0"
        generation = str(int(time.time() * 1000)).encode()
        self.redis.set(redis_keys.ROLLUP_READY, generation)
        log.info("rollup rebuilt in %.1fs", time.monotonic() - started)
        return generation

    # ----- one step ------------------------------------------------------------------------
    def _step(self, generation: str) -> bool:
        assert self._bookmark is not None
        in_hand = self.stream.step_in_hand()
        until: str | bytes | None
        if in_hand is not None:
            start, end = in_hand
            entries = self.stream.read_range(start, end, None)
            until = self.stream.stored_until() or end
        else:
            until = self.stream.stored_until()
            if until is None:
                return False
            start = self._bookmark
            count = max(1, min(_MAX_ENTRIES_PER_STEP, int(_EVENTS_PER_STEP / self._events_per_entry)))
            entries = self.stream.read_range(start, until, count)
            if not entries:
                self.stream.report_behind(0)
                return False
            end = entries[-1][0]
            self.stream.begin_step(start, end)
        self._dead.update(self.stream.newly_dead_letters())
        folded = self._fold(entries, token=step_token(generation, start, end), version=_version(end))
        self.stream.finish_step(end)
        self.stream.report_behind(max(0, _id_ms(until) - _id_ms(end)))
        self._bookmark = end
        end_key = id_key(end)
        self._dead = {entry_id for entry_id in self._dead if id_key(entry_id) > end_key}
        if entries:
            self._events_per_entry = max(1.0, folded / len(entries))
        self.folded_events += folded
        return True

    def _fold(self, entries: list[Entry], token: str, version: int) -> int:
        events = list(self._events_of(entries))
        keys = list(dict.fromkeys((event.experiment_key, event.session_id) for event in events))
        known = self._known_sessions()
        states: dict[tuple[str, str], SessionState] = {}
        missing = []
        for key in keys:
            state = self.cache.get(key)
            if state is not None:
                states[key] = state
            elif known.may_contain(*key):
                missing.append(key)  # stored once and since evicted (or a rare false positive)
        if missing:
            states.update(rollup_store.load_sessions(self.clickhouse.client(), missing))
        # States change in place: if this step fails, run() clears the cache and the states are
        # read back from ClickHouse, as they were before the step.
        before = {}
        changed: dict[tuple[str, str], SessionState] = {}
        created = []
        for event in events:
            key = (event.experiment_key, event.session_id)
            state = states.get(key)
            if state is None:
                state = states[key] = SessionState()
                created.append(key)
            if key not in before:
                before[key] = state.contribution() if len(state) else {}
            if state.apply(event.variant_key, event.event_id, event.event_type, event.conversion_value):
                changed[key] = state
        differences: dict[tuple[str, str], list[float]] = {}
        for key, state in changed.items():
            add_difference(differences, key[0], before[key], state.contribution())
        differences = {key: vector for key, vector in differences.items() if not is_zero(vector)}
        # Fencing: had this process stalled past the lock's lifetime, another roller may have
        # folded these entries already (under another range, so another token).
        if self.redis.get(redis_keys.ROLLUP_LOCK) != self._owner.encode():
            raise LostLock("the rollup lock passed to another process during this step")
        # Before the inserts: a session marked stored that never was costs one needless lookup,
        # while one stored but not marked would be counted as new.
        for key in created:
            known.add(*key)
        client = self.clickhouse.client()
        rollup_store.insert_totals(client, differences, token)
        rollup_store.insert_sessions(client, changed, version, token)
        for key, state in states.items():
            self.cache.put(key, state)
        return len(events)

    def _events_of(self, entries: list[Entry]) -> Iterator:
        for entry_id, fields in entries:
            if entry_id in self._dead:
                continue
            raw = envelope_bytes(fields) if fields else None  # None: trimmed away before it was read
            if raw is None:
                continue
            try:
                envelope = _decoder.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # poison: the workers dead-letter it, so it is not in abacus.events either
            yield from envelope.events


def step_token(generation: str, start: bytes, end: bytes) -> str:
    """The deduplication token of a step's inserts: the same range folded again (after a crash)
    gets the same token; the generation (the last rebuild) keeps a step after a rebuild, which
    restarts from the stream's start, from reusing a token of a step before it."""
    return f"rollup:{generation}:{start.decode()}:{end.decode()}"


def _id_ms(bound: str | bytes) -> int:
    return id_key(bound)[0]


def _version(entry_id: bytes) -> int:
    """Increases with the stream position, so the latest state of a session wins under FINAL."""
    ms, seq = id_key(entry_id)
    return (ms << 20) | min(seq, (1 << 20) - 1)
