"""The ordered checks every parsed beacon goes through; any of them may drop it with a reason.

A dropped beacon still gets a 202 (the page must not retry it), with the reason in a header and
a counter per reason, so operators can see what is being filtered and why.
"""

from __future__ import annotations

import enum
import itertools
import secrets
import time
from collections import Counter

from shared.registry.cache import IngestView
from shared.wire import Beacon, StreamEvent, client_ts_ms


class DropReason(str, enum.Enum):
    BOT = "bot"
    EXPERIMENTS_DISABLED = "experiments_disabled"
    UNKNOWN_EXPERIMENT = "unknown_experiment"
    EXPERIMENT_DISABLED = "experiment_disabled"
    UNKNOWN_VARIANT = "unknown_variant"


class DropCounter:
    """Per-process counts of dropped beacons by reason, exported on /metrics."""

    def __init__(self) -> None:
        self.counts: Counter[DropReason] = Counter()
        self.accepted = 0

    def drop(self, reason: DropReason, n: int = 1) -> None:
        self.counts[reason] += n


def registry_drop_reason(beacon: Beacon, view: IngestView) -> DropReason | None:
    """Registry checks, in the order an operator would debug them: kill switch, experiment, variant.

    Path is deliberately not checked against eligible_routes: conversions happen on other pages.
    """
    if not view.experiments_enabled:
        return DropReason.EXPERIMENTS_DISABLED
    variants = view.variants_by_experiment.get(beacon.experiment_key)
    if variants is None:
        return DropReason.UNKNOWN_EXPERIMENT
    if beacon.experiment_key not in view.enabled_experiments:
        return DropReason.EXPERIMENT_DISABLED
    if beacon.variant_key not in variants:
        return DropReason.UNKNOWN_VARIANT
    return None


class EventIds:
    """Ids for beacons that came without one: a random per-process prefix and a counter, unique
    like a UUID across processes but about ten times cheaper to make on the hot path."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


def to_stream_event(beacon: Beacon, metadata_json: str, received_at_ms: int, event_ids: EventIds) -> StreamEvent:
    return StreamEvent(
        # Generated ids are unique, so only a client-supplied id makes a retry count once.
        event_id=beacon.event_id or event_ids.next(),
        experiment_key=beacon.experiment_key,
        variant_key=beacon.variant_key,
        session_id=beacon.session_id,
        event_type=beacon.event_name,
        path=beacon.path,
        conversion_value=beacon.value,
        metadata_json=metadata_json,
        client_ts_ms=client_ts_ms(beacon),
        received_at_ms=received_at_ms,
    )


def now_ms() -> int:
    return time.time_ns() // 1_000_000
