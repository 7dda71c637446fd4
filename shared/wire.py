"""Wire types: the beacon a page sends and the message ingest writes to the Redis stream.

Stream messages evolve by msgspec's rules (new fields get defaults, no field changes type), so a
worker of any newer version decodes what an older ingest wrote. ``v`` names the layout.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Annotated, Union

import msgspec
from msgspec import Meta

KNOWN_EVENT_TYPES = ("impression", "cta_click", "form_start", "form_submit", "conversion")
ENVELOPE_FIELD = b"e"
"""The stream entry field that holds a msgpack-encoded ``StreamEnvelope``."""
MAX_METADATA_BYTES = 4096
MAX_BATCH_ITEMS = 500
MAX_VALUE = 1_000_000_000
"""Largest conversion value a beacon may carry: sums of values (and of their squares) over any
realistic number of events then stay finite, so one page cannot turn everyone's totals into
infinity."""

ExperimentKey = Annotated[str, Meta(min_length=1, max_length=64)]
SessionId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
PagePath = Annotated[str, Meta(pattern=r"^/", max_length=2048)]
EventName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
EventId = Annotated[str, Meta(min_length=1, max_length=64)]
MetadataValue = Union[str, int, float, bool]
ConversionValue = Annotated[float, Meta(ge=0, le=MAX_VALUE)]


class Beacon(msgspec.Struct, frozen=True):
    """One experiment event as a page sends it. Unknown fields are ignored, as old clients send extras."""

    experiment_key: ExperimentKey
    variant_key: ExperimentKey
    session_id: SessionId
    path: PagePath
    event_name: EventName
    timestamp: datetime | None = None
    metadata: Annotated[dict[str, MetadataValue], Meta(max_length=32)] | None = None
    value: ConversionValue | None = None
    event_id: EventId | None = None


BeaconBatch = Annotated[list[Beacon], Meta(max_length=MAX_BATCH_ITEMS)]


class StreamEvent(msgspec.Struct, frozen=True, array_like=True):
    """An accepted beacon as stored in the stream: array-like keeps entries small and fast to decode."""

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


class StreamEnvelope(msgspec.Struct, frozen=True):
    """One stream entry: every accepted beacon of one request, so a batch request costs one XADD."""

    events: list[StreamEvent]
    v: int = 1


class BeaconRuleError(ValueError):
    """A beacon passed the schema but breaks a rule the schema cannot express; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{message} - at `{field}`")
        self.field = field


# Client clocks are often wrong; only refuse timestamps ClickHouse's DateTime64 could not store.
_MIN_TS = datetime(1971, 1, 1).timestamp()
_MAX_TS = datetime(2200, 1, 1).timestamp()


def check_beacon_rules(beacon: Beacon, where: str = "$") -> tuple[str, int | None]:
    """Raise on a broken rule; return the metadata as JSON and the client timestamp in epoch
    milliseconds: checking needs both computed anyway, and the stream entry stores them, so the
    hot path computes each once."""
    if beacon.value is not None and not math.isfinite(beacon.value):
        raise BeaconRuleError(f"{where}.value", "Expected a finite number")
    client_ts_ms = None
    if beacon.timestamp is not None:
        ts = _epoch_seconds(beacon.timestamp)
        if not _MIN_TS <= ts <= _MAX_TS:
            raise BeaconRuleError(f"{where}.timestamp", "Timestamp out of range")
        client_ts_ms = int(ts * 1000)
    if not beacon.metadata:
        return "{}", client_ts_ms
    for key, item in beacon.metadata.items():
        if isinstance(item, float) and not math.isfinite(item):
            raise BeaconRuleError(f"{where}.metadata.{key}", "Expected a finite number")
    encoded = msgspec.json.encode(beacon.metadata)
    if len(encoded) > MAX_METADATA_BYTES:
        raise BeaconRuleError(f"{where}.metadata", f"Object larger than {MAX_METADATA_BYTES} bytes")
    return encoded.decode(), client_ts_ms


def _epoch_seconds(moment: datetime) -> float:
    if moment.tzinfo is None:
        # A timestamp without an offset is taken as UTC, like ClickHouse does with DateTime64('UTC').
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
