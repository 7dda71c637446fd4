"""One roller step's fold, fed the step's events a chunk at a time as they are read.

A step spans up to hundreds of thousands of events, but holds its decoded events only one chunk
(an ``XRANGE`` reply) at a time: each chunk is applied to the session states at once and encoded
as the rows ``abacus.rollup_events`` stores, then let go. So steps can be large, and a session
is looked up, and its summary built before and after, once per step however many of its events
the step holds: in a backlog whose sessions are spread thinly over it (the bench's), that
per-session work was most of the fold.

The encoded rows wait in the step until worker/rollup_share.py takes them (``take_events``) to
send them while the step is still being read and folded; ``finish`` returns the step's signed
session summaries (which ClickHouse turns into per-minute total differences), the rows not sent
yet and, for events that arrived twice with other contents, the copies abacus.events keeps. It
writes nothing: worker/rollup_share.py records, writes and bookmarks the step.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.rollup.session import REPLACED, SessionState
from worker import rollup_store
from worker.rollup_fold import FoldEvent, ShareFolder
from worker.rollup_store import SummaryRow

SessionKey = tuple[str, str]
"""(experiment_key, session_id)"""


@dataclass
class FoldedStep:
    summaries: bytes
    """The changed sessions' summaries before (-1) and after (+1), as msgpack rows."""
    events: bytes
    """The step's events not yet taken (``FoldStep.take_events``), as msgpack rows."""
    unsent_events: int
    corrected: bytes
    """The copies abacus.events keeps of the events that arrived with other contents."""
    corrected_events: int
    event_count: int
    """The share's events in the step."""
    read: int
    """Events read (of every share)."""
    states: dict[SessionKey, SessionState]
    """The states the step touched: the states of the step in flight (``ShareFolder.pinned``)."""


class FoldStep:
    def __init__(self, folder: ShareFolder, folded_until: int) -> None:
        """``folded_until``: the step's start (``rollup_store.entry_number``), as of which a
        session is read back from ClickHouse."""
        self.folder = folder
        self.folded_until = folded_until
        self.read = 0
        self.event_count = 0
        self.states: dict[SessionKey, SessionState] = {}
        self._known = folder.known_sessions()
        self._before: dict[SessionKey, tuple[SummaryRow, ...]] = {}
        self._created: list[SessionKey] = []
        self._replaced: list[FoldEvent] = []
        self._evicted: dict[SessionKey, list[FoldEvent]] = {}
        self._stored: list[bytes] = []
        self._stored_events = 0

    def add(self, events: list[FoldEvent]) -> None:
        """Fold the next chunk of the step's events (in stream order) into the states."""
        self.read += len(events)
        folder = self.folder
        if folder.shards > 1:
            events = [event for event in events if folder.owns(event.experiment_key)]
        states, before, evicted, known = self.states, self._before, self._evicted, self._known
        cache_get, pinned = folder.cache.get, folder.pinned
        summary_rows = rollup_store.summary_rows
        for event in events:
            key = (event.experiment_key, event.session_id)
            state = states.get(key)
            if state is None:
                # The session's first event in this step: its state, and its summary before it.
                group = evicted.get(key)
                if group is not None:
                    group.append(event)
                    continue
                state = cache_get(key)
                if state is None:
                    state = pinned.get(key)
                if state is not None:
                    before[key] = summary_rows(state, key[0])
                elif known.may_contain(*key):
                    # Folded once and since evicted (or a rare false positive): its events wait
                    # for the step's end, when all such sessions are read back in one query.
                    evicted[key] = [event]
                    continue
                else:  # brand new: nothing to look up, nothing to subtract
                    state = SessionState()
                    self._created.append(key)
                states[key] = state
            if (
                state.apply(event.variant_key, event.event_id, event.event_type, event.conversion_value, event.received_at_ms)
                == REPLACED
            ):
                self._replaced.append(event)
        if events:
            self._stored.append(rollup_store.event_rows(events))
            self._stored_events += len(events)
            self.event_count += len(events)

    @property
    def unsent_events(self) -> int:
        return self._stored_events

    def take_events(self) -> tuple[bytes, int]:
        """The rows of the events folded since the last call (every copy as the stream has it), and
        how many: the caller stores them now, ahead of the step's end."""
        rows, count = b"".join(self._stored), self._stored_events
        self._stored, self._stored_events = [], 0
        return rows, count

    def finish(self) -> FoldedStep:
        """The step's summaries, the rows not taken yet, and the corrected copies."""
        folder, states = self.folder, self.states
        if self._evicted:
            self._fold_evicted()
        corrected: list[FoldEvent] = []
        if self._replaced:
            corrected = folder.stored_copies(self._replaced, states)
        # Each changed session's contribution before (-1) and after (+1) the step, as summaries:
        # ClickHouse turns them into the per-minute total differences with the results' own SQL. A
        # state that changed has let go of its cached rows (``SessionState.apply``), so the rows
        # from before are this step's to flip.
        rows: list[SummaryRow] = []
        add, extend, before = rows.append, rows.extend, self._before
        summary_rows = rollup_store.summary_rows
        for key, state in states.items():
            if state.rows is None:
                for row in before.get(key, ()):
                    row.sign = -1
                    add(row)
                extend(summary_rows(state, key[0]))
        summaries = rollup_store.summaries(rows)
        # Before the inserts: a session marked folded that never was costs one needless lookup,
        # while one folded but not marked would be counted as new.
        for key in self._created:
            self._known.add(*key)
        folder.cache.put_all(states)
        events, unsent = self.take_events()
        return FoldedStep(
            summaries, events, unsent, rollup_store.event_rows(corrected), len(corrected), self.event_count, self.read, states
        )

    def _fold_evicted(self) -> None:
        """Read back the states of the sessions neither cached nor certainly new, then apply
        their events (a false positive of the filter gets a new state)."""
        loaded = rollup_store.load_sessions(self.folder.clickhouse.client(), list(self._evicted), self.folded_until)
        for key, group in self._evicted.items():
            state = loaded.get(key)
            if state is None:
                state = SessionState()
                self._created.append(key)
            else:
                self._before[key] = rollup_store.summary_rows(state, key[0])
            self.states[key] = state
            apply = state.apply
            for event in group:
                if (
                    apply(event.variant_key, event.event_id, event.event_type, event.conversion_value, event.received_at_ms)
                    == REPLACED
                ):
                    self._replaced.append(event)
        self._evicted = {}
