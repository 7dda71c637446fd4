"""One roller step's fold, fed the step's events a chunk at a time as they are read.

A step spans up to hundreds of thousands of events, but holds its decoded events only one chunk
(an ``XRANGE`` reply) at a time: each chunk is applied to the session states at once and encoded
as the rows ``abacus.rollup_events`` stores, then let go. So steps can be large, and a session
is looked up, and its summary built before and after, once per step however many of its events
the step holds: in a backlog whose sessions are spread thinly over it (the bench's), that
per-session work was most of the fold.

``finish`` returns the step's signed session summaries (which ClickHouse turns into per-day
total differences) and its events one copy each as ``abacus.events`` keeps them. It writes
nothing: worker/rollup_share.py records, writes and bookmarks the step.
"""

from __future__ import annotations

from collections.abc import Callable
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
    """The step's events one copy each as abacus.events keeps them, as msgpack rows."""
    event_count: int
    read: int
    """Events read (of every share)."""
    states: dict[SessionKey, SessionState]
    """The states the step touched: the states of the step in flight (``ShareFolder.pinned``)."""


class FoldStep:
    def __init__(self, folder: ShareFolder) -> None:
        self.folder = folder
        self.read = 0
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

    def finish(self, reread: Callable[[], list[FoldEvent]]) -> FoldedStep:
        """The step's summaries and events. ``reread`` decodes the step's events again: needed
        only when a copy of an event replaced another (a retry with other contents), to keep
        one copy of each, the one abacus.events keeps (``ShareFolder.as_stored``)."""
        folder, states = self.folder, self.states
        if self._evicted:
            self._fold_evicted()
        if self._replaced:
            events = reread()
            if folder.shards > 1:
                events = [event for event in events if folder.owns(event.experiment_key)]
            events = folder.as_stored(events, self._replaced, states)
            self._stored, self._stored_events = [rollup_store.event_rows(events)], len(events)
        # Each changed session's contribution before (-1) and after (+1) the step, as summaries:
        # ClickHouse turns them into the per-day total differences with the results' own SQL. A
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
        return FoldedStep(summaries, b"".join(self._stored), self._stored_events, self.read, states)

    def _fold_evicted(self) -> None:
        """Read back the states of the sessions neither cached nor certainly new, then apply
        their events (a false positive of the filter gets a new state)."""
        loaded = rollup_store.load_sessions(self.folder.clickhouse.client(), list(self._evicted))
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
