"""One share of the rollup as its roller folds it: rebuild when needed, then step by step."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import msgspec
from redis.exceptions import RedisError

from shared.clickhouse import ClickHouse
from shared.rollup.known_sessions import KnownSessions
from shared.rollup.protocol import Share, id_key, shard_of
from shared.rollup.session import REPLACED, SessionState
from worker import rollup_store
from worker.rollup_stream import RollupStream
from worker.rows import envelope_bytes
from worker.stream import Entry

log = logging.getLogger(__name__)

# Larger steps share ClickHouse's per-insert cost among more events; bounded so a step's memory is.
_EVENTS_PER_STEP = 50_000
_MAX_ENTRIES_PER_STEP = 50_000
_MOST_EVENTS_PER_ENTRY = 500  # ingest's cap on the events it packs into one stream entry
_READ_CHUNK = 5000  # entries per XRANGE within a step (see _read_events)


class FoldEvent(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """``shared.wire.StreamEvent``'s layout, decoded without the garbage collector tracking each
    event (a step holds tens of thousands: the collector walked them all)."""

    event_id: str
    experiment_key: str
    variant_key: str
    session_id: str
    event_type: str
    path: str
    conversion_value: float | None
    metadata_json: str
    client_ts_ms: int | None
    received_at_ms: int


class FoldEnvelope(msgspec.Struct, gc=False):
    events: list[FoldEvent]
    v: int = 1


_decoder = msgspec.msgpack.Decoder(FoldEnvelope)


class LostLock(RedisError):
    """Another process holds the share's lock now; this step must not write."""


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


class ShareRoller:
    def __init__(self, share: Share, stream: RollupStream, clickhouse: ClickHouse, cache_sessions: int, owner: str) -> None:
        self.share = share
        self.stream = stream
        self.clickhouse = clickhouse
        self.owner = owner
        self.cache = SessionCache(cache_sessions)
        self.sink = rollup_store.events_sink(clickhouse)
        self.folded_events = 0
        self._streams = range(len(stream.streams))
        # Per stream shard: how far this share is folded (None: to be read from Redis), the ids
        # dead-lettered ahead of it and the cursor in its dead letters. A session's events are
        # all in one stream shard, so the shards fold independently, in turn.
        self._bookmarks: list[bytes] | None = None
        self._dead: list[set[bytes]] = [set() for _ in self._streams]
        self._dead_cursor = [b"0-0" for _ in self._streams]
        self._next_stream = 0
        self._known: KnownSessions | None = None
        self._shard_of: dict[str, int] = {}
        # Assume full entries until a step has shown otherwise: the first step stays small
        # instead of reading _MAX_ENTRIES_PER_STEP entries that could each be full.
        self._events_per_entry = float(_MOST_EVENTS_PER_ENTRY)
        # Steps are pipelined: while one step's inserts run (chDB and the HTTP client wait without
        # the interpreter lock), the next is read and folded in memory; it is recorded and written
        # only once the one before has landed, so at most one step is ever in flight.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rollup-write-{share.shard}")
        self._pending: Future | None = None
        self._pinned: dict[tuple[str, str], SessionState] = {}
        """The states of the step in flight: they are not in ClickHouse yet, so a session the cache
        let go of meanwhile is taken from here, never read back stale."""

    def forget(self) -> None:
        """After a failed step: re-read the bookmark and the session states, as ClickHouse and
        Redis hold them, before the next step (once the write in flight, if any, has ended)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                pending.result()
            except Exception:  # noqa: BLE001 - what ClickHouse and Redis hold now is re-read anyway
                pass
        self._pinned = {}
        self.cache.clear()
        self._bookmarks = None

    def settle(self) -> None:
        """Wait until the step being written has landed and its bookmark moved; its error, if any."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def new_tenure(self) -> None:
        """Another roller may have run this share since this process last held it: forget everything."""
        self.forget()
        self._known = None
        self._dead = [set() for _ in self._streams]
        self._dead_cursor = [b"0-0" for _ in self._streams]

    def run_once(self) -> bool:
        """One step (after a rebuild, when one is due); True when it folded something."""
        generation = self.share.generation()
        if self._bookmarks is None or generation is None:
            bookmarks = [self.share.bookmark(s) for s in self._streams]
            self._bookmarks = bookmarks if None not in bookmarks else None  # type: ignore[assignment]
            if self._bookmarks is None or generation is None:
                generation = self.rebuild()
        return self._step(generation)

    # ----- rebuild -----------------------------------------------------------------------------
    def rebuild(self) -> str:
        """Recompute the share from abacus.events, then refold whatever is still in the stream;
        returns the rebuild's generation (its completion time), which names its steps' tokens.

        The bookmark moves to the stream's start first, so nothing is trimmed that the snapshot
        might miss; refolded events the snapshot already holds change nothing (same event ids)."""
        log.info("rebuilding rollup share %d of %d from abacus.events", self.share.shard, self.share.shards)
        self.settle()
        started = time.monotonic()
        # The request is taken now, not when done: one made while this rebuild runs starts another.
        served = self.share.begin_rebuild()
        self.new_tenure()
        self._fence()
        rollup_store.rebuild_from_events(self.clickhouse.client(), self.share.shard, self.share.shards, self.clickhouse.cluster)
        self._bookmarks = [b"0-0" for _ in self._streams]
        generation = self.share.finish_rebuild(served)
        log.info("rollup share %d rebuilt in %.1fs", self.share.shard, time.monotonic() - started)
        return generation

    # ----- one step ----------------------------------------------------------------------------
    def _step(self, generation: str) -> bool:
        """One step of the next stream shard (in turn) that has entries the workers stored."""
        assert self._bookmarks is not None
        if self._pending is None:
            for stream in self._streams:
                in_hand = self.share.step_in_hand(stream)
                if in_hand is not None:  # left by a crash: redo exactly that range, before anything else
                    start, end = in_hand
                    entries = self.stream.read_range(start, end, None, stream)
                    self._update_dead_letters(stream)
                    token = step_token(generation, self.share.shard, start, end, self._stream_tag(stream))
                    folded, read = self._fold(entries, token, stream)
                    self.share.finish_step(end, stream)
                    self._moved_past(stream, end, len(entries), folded, read)
                    return True
        count = max(1, min(_MAX_ENTRIES_PER_STEP, int(_EVENTS_PER_STEP / self._events_per_entry)))
        for offset in self._streams:
            stream = (self._next_stream + offset) % len(self._streams)
            until = self.stream.stored_until(stream)
            if until is None:
                continue
            start = self._bookmarks[stream]
            # Dead letters first: every entry below ``until`` that a worker dead-lettered is listed by now.
            self._update_dead_letters(stream)
            events, entries, end = self._read_events(start, until, count, stream)
            if end is not None:
                break
        else:
            self.settle()
            return False
        self._next_stream = (stream + 1) % len(self._streams)
        summaries, events, read, states = self._fold_in_memory(events)
        self.settle()  # the step before has landed: now this one may be recorded and written
        self.share.begin_step(start, end, stream)
        self._fence()
        self._pinned = states
        token = step_token(generation, self.share.shard, start, end, self._stream_tag(stream))
        self._pending = self._writer.submit(self._write, summaries, events, token, end, stream)
        self._moved_past(stream, end, entries, len(events), read)
        return True

    def _stream_tag(self, stream: int) -> str:
        return "" if len(self._streams) == 1 else str(stream)

    def _read_events(
        self, after: bytes, until: str | bytes, count: int | None, stream: int
    ) -> tuple[list[FoldEvent], int, bytes | None]:
        """The events of up to ``count`` entries (every one when None) of stream shard ``stream``
        after ``after`` up to ``until``: (events, entries read, the last entry's id, None when
        there was none).

        Read in chunks and decoded as each arrives: a whole step's reply holds two lists per
        entry, which the garbage collector's full collections walked again and again while the
        step was folded; a chunk's lists are gone before they reach the oldest generation."""
        events: list[FoldEvent] = []
        entries = 0
        last = None
        while count is None or entries < count:
            want = _READ_CHUNK if count is None else min(_READ_CHUNK, count - entries)
            chunk = self.stream.read_range(after, until, want, stream)
            if not chunk:
                break
            self._decode_into(events, chunk, stream)
            entries += len(chunk)
            last = after = chunk[-1][0]
            if len(chunk) < want:
                break
        return events, entries, last

    def _moved_past(self, stream: int, end: bytes, entries: int, folded: int, read: int) -> None:
        assert self._bookmarks is not None
        self._bookmarks[stream] = end
        end_key = id_key(end)
        self._dead[stream] = {entry_id for entry_id in self._dead[stream] if id_key(entry_id) > end_key}
        if entries:
            self._events_per_entry = max(1.0, read / entries)
        self.folded_events += folded

    def _update_dead_letters(self, stream: int) -> None:
        dead, self._dead_cursor[stream] = self.stream.dead_letters_after(self._dead_cursor[stream], stream)
        self._dead[stream].update(dead)

    def _fold(self, entries: list[Entry], token: str, stream: int = 0) -> tuple[int, int]:
        """Fold this share's events of ``entries`` and write them, at once; (events folded, events read)."""
        events: list[FoldEvent] = []
        self._decode_into(events, entries, stream)
        summaries, events, read, _ = self._fold_in_memory(events)
        self._fence()
        rollup_store.insert_summaries(self.sink, summaries, token)
        rollup_store.insert_events(self.sink, events, token)
        return len(events), read

    def _write(self, summaries: bytes, events: list[FoldEvent], token: str, end: bytes, stream: int) -> None:
        """A step's inserts, then its bookmark: on the writer thread."""
        # The totals first, then the events, never both at once: a redo after only the totals
        # landed recomputes them (dropped by token); had only the events landed, the redo would
        # find them folded and add nothing, and the totals would lack them for good.
        rollup_store.insert_summaries(self.sink, summaries, token)
        rollup_store.insert_events(self.sink, events, token)
        self.share.finish_step(end, stream)

    def _fold_in_memory(self, events: list[FoldEvent]) -> tuple[bytes, list[FoldEvent], int, dict]:
        """Apply this share's ``events`` (of the step's entries) to the session states: (the
        step's signed session summaries as msgpack rows, its events one copy each as
        abacus.events keeps them, events read, the states it touched)."""
        read = len(events)
        if self.share.shards > 1:
            events = [event for event in events if self._owns(event.experiment_key)]
        # Each session's events together, in stream order: its state is looked up, and its
        # contribution before and after the step computed, once per step, not once per event.
        by_session: dict[tuple[str, str], list[FoldEvent]] = {}
        for event in events:
            key = (event.experiment_key, event.session_id)
            group = by_session.get(key)
            if group is None:
                by_session[key] = [event]
            else:
                group.append(event)
        known = self._known_sessions()
        states: dict[tuple[str, str], SessionState] = {}
        missing = []
        pinned = self._pinned
        cache_get = self.cache.get
        for key in by_session:
            state = cache_get(key)
            if state is None:
                state = pinned.get(key)
            if state is not None:
                states[key] = state
            elif known.may_contain(*key):
                missing.append(key)  # folded once and since evicted (or a rare false positive)
        if missing:
            states.update(rollup_store.load_sessions(self.clickhouse.client(), missing))
        # States change in place: if this step fails, the cache is cleared and the states are
        # read back from ClickHouse, as they were before the step.
        changed: list[tuple[tuple[str, str], SessionState, tuple[bytes, ...]]] = []
        created = []
        replaced = []
        summary_rows = rollup_store.summary_rows
        for key, group in by_session.items():
            state = states.get(key)
            if state is None:
                state = states[key] = SessionState()
                created.append(key)
                before: tuple[bytes, ...] = ()
            else:
                before = summary_rows(state, key[0])
            apply = state.apply
            touched = False
            for event in group:
                outcome = apply(event.variant_key, event.event_id, event.event_type, event.conversion_value, event.received_at_ms)
                if outcome:
                    touched = True
                    if outcome == REPLACED:
                        replaced.append(event)
            if touched:
                changed.append((key, state, before))
        events = self._as_stored(events, replaced, states)
        # Each changed session's contribution before (-1) and after (+1) the step, as summaries:
        # ClickHouse turns them into the per-day total differences with the results' own SQL.
        pieces: list[bytes] = []
        add = pieces.append
        subtracted = rollup_store.SUBTRACTED_PREFIX
        for key, state, before in changed:
            for row in before:
                add(subtracted + row[2:])
            pieces.extend(summary_rows(state, key[0]))
        # Before the inserts: a session marked folded that never was costs one needless lookup,
        # while one folded but not marked would be counted as new.
        for key in created:
            known.add(*key)
        cache_put = self.cache.put
        for key, state in states.items():
            cache_put(key, state)
        return b"".join(pieces), events, read, states

    def _as_stored(self, events: list[FoldEvent], replaced: list[FoldEvent], states: dict) -> list[FoldEvent]:
        """The step's events, one copy per event as abacus.events keeps it.

        Two copies of one event (same experiment, variant, session and event_id) with other
        contents, a client's retry received later say, are one row in abacus.events: the copy
        inserted last, which is not always the later in the stream (copies in one insert, or in
        batches two workers inserted out of order). So for every event whose copy this step
        replaced, the copy abacus.events holds is read back and becomes the state's (all the
        copies are stored: the roller folds only stored entries)."""
        if not replaced:
            return events  # repeated copies, if any, are identical: any of them is the stored one
        latest = {(e.experiment_key, e.variant_key, e.session_id, e.event_id): e for e in events}
        if replaced:
            keys = list(dict.fromkeys((e.experiment_key, e.variant_key, e.session_id, e.event_id) for e in replaced))
            for row in rollup_store.stored_copies(self.clickhouse.client(), keys):
                stored = FoldEvent(*row)
                latest[(stored.experiment_key, stored.variant_key, stored.session_id, stored.event_id)] = stored
                state = states[(stored.experiment_key, stored.session_id)]
                state.apply(
                    stored.variant_key, stored.event_id, stored.event_type, stored.conversion_value, stored.received_at_ms
                )
        return list(latest.values())

    def _fence(self) -> None:
        # Had this process stalled past the lock's lifetime, another roller may have folded
        # these entries already (under another range, so another token): write nothing then.
        if not self.share.holds(self.owner):
            raise LostLock(f"the lock of rollup share {self.share.shard} passed to another process")

    def _owns(self, experiment_key: str) -> bool:
        shard = self._shard_of.get(experiment_key)
        if shard is None:
            shard = self._shard_of[experiment_key] = shard_of(experiment_key, self.share.shards)
        return shard == self.share.shard

    def _decode_into(self, events: list[FoldEvent], entries: list[Entry], stream: int) -> None:
        dead = self._dead[stream]
        extend = events.extend
        decode = _decoder.decode
        for entry_id, fields in entries:
            if entry_id in dead:
                continue
            raw = envelope_bytes(fields) if fields else None  # None: trimmed away before it was read
            if raw is None:
                continue
            try:
                extend(decode(raw).events)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # poison: the workers dead-letter it, so it is not in abacus.events either

    def _known_sessions(self) -> KnownSessions:
        """The filter of folded sessions, built from ClickHouse when missing or overfull."""
        if self._known is None or self._known.overfull:
            started = time.monotonic()
            client = self.clickhouse.client()
            sessions = rollup_store.count_sessions(client, self.share.shard, self.share.shards)
            # Room to grow: rebuilt (larger) only once it holds about four times this many.
            known = KnownSessions(2 * sessions + 100_000)

            def add_block(experiment_keys: list[str], session_ids: list[str]) -> None:
                for key in zip(experiment_keys, session_ids):
                    known.add(*key)

            rollup_store.stored_session_keys(client, self.share.shard, self.share.shards, add_block)
            log.info("indexed %d folded rollup sessions in %.1fs", sessions, time.monotonic() - started)
            self._known = known
        return self._known


def step_token(generation: str, shard: int, start: bytes, end: bytes, stream: str = "") -> str:
    """The deduplication token of a step's inserts: the same range folded again (after a crash)
    gets the same token; the generation (the share's last rebuild) keeps a step after a rebuild,
    which restarts from the stream's start, from reusing a token of a step before it."""
    # Ids of different stream shards may coincide: a sharded stream's tokens name their shard.
    token = f"rollup:{generation}:{shard}:{start.decode()}:{end.decode()}"
    return f"{token}:s{stream}" if stream else token
