"""The in-memory half of the rollup: a share's session states, and decoding what it folds.

``ShareFolder`` keeps a share's session states (a bounded cache, the step in flight's, and a
filter of the sessions ever folded) and finds the copy of an event abacus.events keeps;
worker/rollup_step.py folds one step's events into them, and worker/rollup_share.py records,
writes and bookmarks the step (the protocol's part). Nothing here writes.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from shared.clickhouse import ClickHouse
from shared.rollup.known_sessions import KnownSessions
from shared.rollup.protocol import shard_of
from shared.rollup.session import SessionState
from shared.wire import ENVELOPE_FIELD, StreamEnvelope, StreamEvent
from worker import rollup_store
from worker.rows import envelope_bytes
from worker.stream import Entry

log = logging.getLogger(__name__)


def _untracked_copy(struct: type[msgspec.Struct], name: str, **changed_types: type) -> type[msgspec.Struct]:
    """``struct``'s layout (fields, types, defaults, array_like, frozen) as a struct the garbage
    collector does not track: a step holds tens of thousands of events, and the collector walked
    them all. Derived, not restated, so the roller decodes exactly what ingest wrote."""
    config = struct.__struct_config__
    fields = [
        (f.name, changed_types.get(f.name, f.type)) if f.required else (f.name, changed_types.get(f.name, f.type), f.default)
        for f in msgspec.structs.fields(struct)
    ]
    return msgspec.defstruct(name, fields, array_like=config.array_like, frozen=config.frozen, gc=False, module=__name__)


if TYPE_CHECKING:  # the same layouts, as the type checker sees them
    FoldEvent = StreamEvent
    FoldEnvelope = StreamEnvelope
else:
    FoldEvent = _untracked_copy(StreamEvent, "FoldEvent")
    """``shared.wire.StreamEvent``, decoded without the garbage collector tracking each event."""
    FoldEnvelope = _untracked_copy(StreamEnvelope, "FoldEnvelope", events=list[FoldEvent])


class _EventHead(msgspec.Struct, array_like=True, gc=False):
    """The first two fields of ``StreamEvent``: msgspec skips the rest of each event's array."""

    event_id: str
    experiment_key: str


class _HeadEnvelope(msgspec.Struct, gc=False):
    events: list[_EventHead]


_decoder = msgspec.msgpack.Decoder(FoldEnvelope)
_head_decoder = msgspec.msgpack.Decoder(_HeadEnvelope)


def decode_into(
    events: list[FoldEvent], entries: list[Entry], dead: set[bytes], owns: Callable[[str], bool] | None = None
) -> None:
    """Append the events of ``entries`` to ``events``, skipping dead-lettered, trimmed and
    undecodable entries (none of which is in abacus.events). With ``owns`` (a share's test of an
    experiment_key), entries holding none of the share's events are skipped too: their heads alone
    are decoded, at less than half the cost, so a roller of one share in n does not pay in full
    for the others' entries (the caller still filters the events of mixed entries)."""
    extend = events.extend
    decode, head = _decoder.decode, _head_decoder.decode
    for entry_id, fields in entries:
        if dead and entry_id in dead:
            continue
        # As ingest writes entries (the envelope the only field) inline: this runs per entry.
        raw: bytes | None
        if type(fields) is list and len(fields) == 2 and fields[0] == ENVELOPE_FIELD:
            raw = fields[1]
        else:
            raw = envelope_bytes(fields) if fields else None  # None: trimmed away before it was read
        if raw is None:
            continue
        try:
            if owns is not None and not any([owns(event.experiment_key) for event in head(raw).events]):
                continue
            extend(decode(raw).events)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # poison: the workers dead-letter it, so it is not in abacus.events either


class SessionCache:
    """The most recently touched session states, bounded: the rest are looked up in ClickHouse."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._states: OrderedDict[tuple[str, str], SessionState] = OrderedDict()
        # The cached state, left where it is: a step puts back every state it got (``put_all``).
        # The dict's own method, called once per session a step touches (``clear`` keeps the dict).
        self.get = self._states.get

    def put_all(self, states: dict[tuple[str, str], SessionState]) -> None:
        """Keep ``states`` as the most recently touched, then let go of the oldest beyond capacity."""
        cached = self._states
        move = cached.move_to_end
        for key, state in states.items():
            cached[key] = state
            move(key)
        evict = cached.popitem
        for _ in range(len(cached) - self.capacity):
            evict(last=False)

    def clear(self) -> None:
        self._states.clear()

    def __len__(self) -> int:
        return len(self._states)


class ShareFolder:
    """One share's session states: a bounded cache, the states of the step being written, and
    a filter of the sessions ever folded (so brand-new sessions are never looked up)."""

    def __init__(self, clickhouse: ClickHouse, shard: int, shards: int, cache_sessions: int) -> None:
        self.clickhouse = clickhouse
        self.shard, self.shards = shard, shards
        self.cache = SessionCache(cache_sessions)
        self.pinned: dict[tuple[str, str], SessionState] = {}
        """The states of the step in flight: they are not in ClickHouse yet, so a session the cache
        let go of meanwhile is taken from here, never read back stale."""
        self._known: KnownSessions | None = None
        self._shard_of: dict[str, int] = {}

    def forget(self) -> None:
        """Drop the states: the next step reads them back as ClickHouse holds them."""
        self.pinned = {}
        self.cache.clear()

    def new_tenure(self) -> None:
        """Another roller may have folded this share meanwhile: the filter is rebuilt too."""
        self.forget()
        self._known = None

    def stored_copies(self, replaced: list[FoldEvent], states: dict) -> list[FoldEvent]:
        """The copy abacus.events keeps of each event whose copy this step replaced, made the
        state's.

        Two copies of one event (same experiment, variant, session and event_id) with other
        contents, a client's retry received later say, are one row in abacus.events: the copy
        inserted last, which is not always the later in the stream (copies in one insert, or in
        batches two workers inserted out of order). So for every event whose copy this step
        replaced, the copy abacus.events holds is read back and becomes the state's (all the
        copies are stored: the roller folds only stored entries); the step writes them as
        ``corrected`` rows, which win over the raw copies it sent (worker/rollup_store.py)."""
        keys = list(dict.fromkeys((e.experiment_key, e.variant_key, e.session_id, e.event_id) for e in replaced))
        copies = [FoldEvent(*row) for row in rollup_store.stored_copies(self.clickhouse.client(), keys)]
        for stored in copies:
            state = states[(stored.experiment_key, stored.session_id)]
            state.apply(stored.variant_key, stored.event_id, stored.event_type, stored.conversion_value, stored.received_at_ms)
        return copies

    def owns(self, experiment_key: str) -> bool:
        shard = self._shard_of.get(experiment_key)
        if shard is None:
            shard = self._shard_of[experiment_key] = shard_of(experiment_key, self.shards)
        return shard == self.shard

    def known_sessions(self) -> KnownSessions:
        """The filter of folded sessions, built from ClickHouse when missing or overfull."""
        if self._known is None or self._known.overfull:
            started = time.monotonic()
            client = self.clickhouse.client()
            sessions = rollup_store.count_sessions(client, self.shard, self.shards)
            # Room to grow: rebuilt (larger) only once it holds about four times this many.
            known = KnownSessions(2 * sessions + 100_000)

            def add_block(experiment_keys: list[str], session_ids: list[str]) -> None:
                for key in zip(experiment_keys, session_ids):
                    known.add(*key)

            rollup_store.stored_session_keys(client, self.shard, self.shards, add_block)
            log.info("indexed %d folded rollup sessions in %.1fs", sessions, time.monotonic() - started)
            self._known = known
        return self._known
