"""One share of the rollup as its roller folds it: rebuild when needed, then step by step.

This module runs the protocol of a step (read what the workers stored, record the range, write
under the range's token, move the bookmark) and pipelines the steps; applying the events to the
session states is worker/rollup_fold.py's.

A step's folded events are sent to abacus.rollup_events while it is still reading and folding
(every ``_EVENTS_PER_INSERT``), on the writer thread, so a large step's biggest insert overlaps
its fold instead of following it. That is safe because a session is read back only as of a step's
start (``rollup_store.load_sessions``): rows a step stored before its bookmark moved are passed
over by a redo of it, and by any step before it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from redis.exceptions import RedisError

from shared.clickhouse import ClickHouse
from shared.rollup.protocol import Share, id_key
from worker import rollup_store
from worker.rollup_fold import FoldEvent, ShareFolder, decode_into
from worker.rollup_step import FoldedStep, FoldStep
from worker.rollup_stream import RollupStream
from worker.stream import Entry

log = logging.getLogger(__name__)

# Larger steps share ClickHouse's per-insert cost among more events, and a session touched
# several times within one step is looked up and has its summary built and written once
# (docs/performance.md, rollup). Bounded so a step's memory is: it holds its decoded events only
# a chunk at a time (worker/rollup_step.py), its encoded events until they are sent (at most
# ~_EVENTS_PER_INSERT) and the states it touched (at most one per event). A roller that has
# caught up takes small steps anyway: a step holds only what the workers stored since the last one.
_EVENTS_PER_STEP = 1_000_000
_MAX_ENTRIES_PER_STEP = 1_000_000
_MOST_EVENTS_PER_ENTRY = 500  # ingest's cap on the events it packs into one stream entry
_READ_CHUNK = 5000  # entries per XRANGE within a step (see _read_into)
# Folded events are sent in inserts of about this many while a step folds: large enough that
# ClickHouse's per-insert cost and parts stay small, small enough that the insert left for the
# step's end (the rest) is short. docs/performance.md (rollup, fifth pass) has the measurements.
_EVENTS_PER_INSERT = 50_000

SendEvents = Callable[[bytes, int, bytes, bytes], None]
"""Stores a step's folded rows (rows, how many, the exclusive start and the end of the entries
they came from) ahead of the step's end."""


class LostLock(RedisError):
    """Another process holds the share's lock now; this step must not write."""


class ShareRoller:
    def __init__(self, share: Share, stream: RollupStream, clickhouse: ClickHouse, cache_sessions: int, owner: str) -> None:
        self.share = share
        self.stream = stream
        self.clickhouse = clickhouse
        self.owner = owner
        self.folder = ShareFolder(clickhouse, share.shard, share.shards, cache_sessions)
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
        # Assume full entries until a step has shown otherwise: the first step stays small
        # instead of reading _MAX_ENTRIES_PER_STEP entries that could each be full.
        self._events_per_entry = float(_MOST_EVENTS_PER_ENTRY)
        # Steps are pipelined: while one step's inserts run (chDB and the HTTP client wait without
        # the interpreter lock), the next is read and folded in memory; it is recorded and written
        # only once the one before has landed, so at most one step is ever in flight.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rollup-write-{share.shard}")
        self._pending: Future | None = None
        # The inserts of the step being folded, sent ahead of its end (``_sender``), in order:
        # the step's write waits for them before moving the bookmark.
        self._sent: list[Future] = []

    def forget(self) -> None:
        """After a failed step: re-read the bookmark and the session states, as ClickHouse and
        Redis hold them, before the next step (once the writes in flight, if any, have ended)."""
        pending, self._pending = self._pending, None
        sent, self._sent = self._sent, []
        for future in [*sent, *([pending] if pending is not None else [])]:
            try:
                future.result()
            except Exception:  # noqa: BLE001 - what ClickHouse and Redis hold now is re-read anyway
                pass
        self.folder.forget()
        self._bookmarks = None

    def settle(self) -> None:
        """Wait until the step being written has landed and its bookmark moved; its error, if any."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def new_tenure(self) -> None:
        """Another roller may have run this share since this process last held it: forget everything."""
        self.forget()
        self.folder.new_tenure()
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
                    self._update_dead_letters(stream)  # the range was stored (or dead-lettered) whole
                    entries, folded = self._redo(start, end, generation, stream)
                    self.share.finish_step(end, stream)
                    self._moved_past(stream, end, entries, folded.event_count, folded.read)
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
            step = FoldStep(self.folder, rollup_store.entry_number(start))
            send = self._sender(generation, stream)
            entries, end = self._read_into(step, start, until, count, stream, send)
            if end is not None:
                break
        else:
            self.settle()
            return False
        self._next_stream = (stream + 1) % len(self._streams)
        folded = step.finish()
        self.settle()  # the step before has landed: now this one may be recorded and written
        self.share.begin_step(start, end, stream)
        self._fence()
        self.folder.pinned = folded.states
        token = step_token(generation, self.share.shard, start, end, self._stream_tag(stream))
        sent, self._sent = self._sent, []
        self._pending = self._writer.submit(self._write, folded, token, end, stream, sent)
        self._moved_past(stream, end, entries, folded.event_count, folded.read)
        return True

    def _stream_tag(self, stream: int) -> str:
        return "" if len(self._streams) == 1 else str(stream)

    def _read_into(
        self, step: FoldStep, after: bytes, until: str | bytes, count: int | None, stream: int, send: SendEvents
    ) -> tuple[int, bytes | None]:
        """Fold the events of up to ``count`` entries (every one when None) of stream shard
        ``stream`` after ``after`` up to ``until`` into ``step``: (entries read, the last entry's
        id, None when there was none). Every ``_EVENTS_PER_INSERT`` folded events go to ``send``.

        Read in chunks, each decoded and folded as it arrives: the step never holds more than a
        chunk of decoded events (worker/rollup_step.py), and a chunk's reply and events are gone
        before the garbage collector's full collections could walk them."""
        entries = 0
        last = None
        sent_until = after
        chunks = self.stream.read_chunks(after, until, count, _READ_CHUNK, stream)
        try:
            for chunk in chunks:
                step.add(self._decoded(chunk, stream))
                entries += len(chunk)
                last = chunk[-1][0]
                if step.unsent_events >= _EVENTS_PER_INSERT:
                    rows, events = step.take_events()
                    send(rows, events, sent_until, last)
                    sent_until = last
        finally:
            chunks.close()  # now, not whenever a failure's traceback lets go: it holds a connection
        return entries, last

    def _sender(self, generation: str, stream: int, background: bool = True) -> SendEvents:
        """Sends a step's rows, by default on the writer thread behind the step before's write (one
        thread: in order). Once one has failed, the step's later ones are not sent: the step fails
        at its write, and its redo reads the sessions as of its start either way."""

        def insert(rows: bytes, events: int, after: bytes, last: bytes, earlier: tuple[Future, ...] = ()) -> None:
            for future in earlier:
                future.result()  # done (the same thread ran it): raises its failure, if any
            # Named after the entries the rows came from: sent again after a crash, the same
            # entries are dropped; others (a step cut elsewhere) are kept, copies of the same events.
            token = step_token(generation, self.share.shard, after, last, self._stream_tag(stream)) + ":sent"
            rollup_store.insert_events(self.sink, rows, events, token, rollup_store.entry_number(last))

        def send(rows: bytes, events: int, after: bytes, last: bytes) -> None:
            self._fence()
            if background:
                self._sent.append(self._writer.submit(insert, rows, events, after, last, tuple(self._sent)))
            else:
                insert(rows, events, after, last)

        return send

    def _decoded(self, entries: list[Entry], stream: int) -> list[FoldEvent]:
        events: list[FoldEvent] = []
        folder = self.folder
        decode_into(events, entries, self._dead[stream], folder.owns if folder.shards > 1 else None)
        return events

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

    def _redo(self, start: bytes, end: bytes, generation: str, stream: int) -> tuple[int, FoldedStep]:
        """Fold and write, at once, the recorded range a crash left; (entries, the fold)."""
        step = FoldStep(self.folder, rollup_store.entry_number(start))
        entries, _ = self._read_into(step, start, end, None, stream, self._sender(generation, stream, background=False))
        token = step_token(generation, self.share.shard, start, end, self._stream_tag(stream))
        folded = step.finish()
        self._fence()
        self._store(folded, token, end)
        return entries, folded

    def _write(self, folded: FoldedStep, token: str, end: bytes, stream: int, sent: list[Future]) -> None:
        """A step's inserts, then its bookmark: on the writer thread, after the rows it sent."""
        for future in sent:
            future.result()  # done (this thread ran them): raises the first failure
        self._store(folded, token, end)
        self.share.finish_step(end, stream)

    def _store(self, folded: FoldedStep, token: str, end: bytes) -> None:
        """The rest of a step's events, the corrected copies, and the total differences. In any
        order, each under its token: a redo reads the sessions as of the step's start, so it
        computes the same differences whichever of them had landed (those are then dropped)."""
        folded_entry = rollup_store.entry_number(end)
        rollup_store.insert_events(self.sink, folded.events, folded.unsent_events, token, folded_entry)
        rollup_store.insert_events(
            self.sink, folded.corrected, folded.corrected_events, f"{token}:corrected", folded_entry, corrected=True
        )
        rollup_store.insert_summaries(self.sink, folded.summaries, token)

    def _fence(self) -> None:
        # Had this process stalled past the lock's lifetime, another roller may have folded
        # these entries already (under another range, so another token): write nothing then.
        if not self.share.holds(self.owner):
            raise LostLock(f"the lock of rollup share {self.share.shard} passed to another process")


def step_token(generation: str, shard: int, start: bytes, end: bytes, stream: str = "") -> str:
    """The deduplication token of a step's inserts: the same range folded again (after a crash)
    gets the same token; the generation (the share's last rebuild) keeps a step after a rebuild,
    which restarts from the stream's start, from reusing a token of a step before it."""
    # Ids of different stream shards may coincide: a sharded stream's tokens name their shard.
    token = f"rollup:{generation}:{shard}:{start.decode()}:{end.decode()}"
    return f"{token}:s{stream}" if stream else token
