"""One session's events within one experiment, and what it contributes to each variant's totals.

The rollup keeps every session's state and, when new events arrive, adds
``contribution(after) - contribution(before)`` to the variant totals. Contributions follow the raw
results query exactly, so the two agree:

- an event is identified by (variant, event_id), as ``abacus.events`` deduplicates it; a repeat
  replaces the earlier copy instead of counting twice;
- a session counts once per variant it has any event in (``unique_sessions``), as *exposed* where it
  has an impression, and as *clean* where it was exposed to exactly one variant of the experiment;
- conversion value is the sum of its conversion events' values.

The state keeps its events as the parallel arrays ``abacus.rollup_sessions`` stores, plus running
counts per variant, so folding an event and computing a contribution cost the same however long
the session is.
"""

from __future__ import annotations

from shared.rollup.totals import TOTAL_FIELDS

_COUNTED_TYPES = {"impression": 0, "cta_click": 1, "form_start": 2, "form_submit": 3, "conversion": 4}
_WIDTH = len(TOTAL_FIELDS)
(
    _IMPRESSIONS,
    _CTA_CLICKS,
    _FORM_STARTS,
    _FORM_SUBMITS,
    _CONVERSIONS,
    _UNIQUE_SESSIONS,
    _EXPOSED,
    _EXPOSED_CONVERTED,
    _VALUE_TOTAL,
    _CLEAN_EXPOSED,
    _CLEAN_CONVERTED,
    _CLEAN_VALUE_SUM,
    _CLEAN_VALUE_SQUARES,
    _MULTI_VARIANT_SHARE,
) = range(_WIDTH)
_VALUE_SLOT = 5  # in a variant's running counts: five event counts, then the conversion value

Contribution = dict[str, list[float]]
"""variant_key -> a vector in ``TOTAL_FIELDS`` order."""


class SessionState:
    __slots__ = ("variant_keys", "event_ids", "event_types", "event_values", "_position", "_counts")

    def __init__(self) -> None:
        self.variant_keys: list[str] = []
        self.event_ids: list[str] = []
        self.event_types: list[str] = []
        self.event_values: list[float] = []
        self._position: dict[tuple[str, str], int] = {}
        self._counts: dict[str, list[float]] = {}

    @classmethod
    def from_arrays(
        cls, variant_keys: list[str], event_ids: list[str], event_types: list[str], event_values: list[float]
    ) -> SessionState:
        state = cls()
        for event in zip(variant_keys, event_ids, event_types, event_values):
            state.apply(*event)
        return state

    def __len__(self) -> int:
        return len(self.event_ids)

    def events(self) -> dict[tuple[str, str], tuple[str, float]]:
        """(variant_key, event_id) -> (event_type, value): what the session holds, for comparisons."""
        return {
            (variant, event_id): (event_type, value)
            for variant, event_id, event_type, value in zip(
                self.variant_keys, self.event_ids, self.event_types, self.event_values
            )
        }

    def apply(self, variant_key: str, event_id: str, event_type: str, value: float | None) -> bool:
        """Fold one event in; False when the session already held exactly this event."""
        value = value if value is not None and event_type == "conversion" else 0.0
        key = (variant_key, event_id)
        position = self._position.get(key)
        counts = self._counts.get(variant_key)
        if counts is None:
            counts = self._counts[variant_key] = [0, 0, 0, 0, 0, 0.0]
        if position is None:
            self._position[key] = len(self.event_ids)
            self.variant_keys.append(variant_key)
            self.event_ids.append(event_id)
            self.event_types.append(event_type)
            self.event_values.append(value)
        else:
            old_type, old_value = self.event_types[position], self.event_values[position]
            if old_type == event_type and old_value == value:
                return False
            # A repeat with other contents replaces the earlier copy, as the table's FINAL does.
            slot = _COUNTED_TYPES.get(old_type)
            if slot is not None:
                counts[slot] -= 1
            counts[_VALUE_SLOT] -= old_value
            self.event_types[position] = event_type
            self.event_values[position] = value
        slot = _COUNTED_TYPES.get(event_type)
        if slot is not None:
            counts[slot] += 1
        counts[_VALUE_SLOT] += value
        return True

    def contribution(self) -> Contribution:
        counts_by_variant = self._counts
        exposed_variants = sum(1 for counts in counts_by_variant.values() if counts[_IMPRESSIONS] > 0)
        out: Contribution = {}
        for variant_key, counts in counts_by_variant.items():
            value = counts[_VALUE_SLOT]
            exposed = counts[_IMPRESSIONS] > 0
            converted = exposed and counts[_CONVERSIONS] > 0
            vector = [
                counts[0],
                counts[1],
                counts[2],
                counts[3],
                counts[4],
                1,
                int(exposed),
                int(converted),
                value,
                0,
                0,
                0.0,
                0.0,
                0.0,
            ]
            if exposed and exposed_variants == 1:
                vector[_CLEAN_EXPOSED] = 1
                vector[_CLEAN_CONVERTED] = int(converted)
                vector[_CLEAN_VALUE_SUM] = value
                vector[_CLEAN_VALUE_SQUARES] = value * value
            elif exposed:
                vector[_MULTI_VARIANT_SHARE] = 1 / exposed_variants
            out[variant_key] = vector
        return out


def add_difference(
    totals: dict[tuple[str, str], list[float]], experiment_key: str, before: Contribution, after: Contribution
) -> None:
    """``totals[(experiment, variant)] += after[variant] - before[variant]`` for every variant in either."""
    for variant_key, new in after.items():
        target = totals.get((experiment_key, variant_key))
        if target is None:
            target = totals[(experiment_key, variant_key)] = [0] * _WIDTH
        old = before.get(variant_key)
        if old is None:
            for i in range(_WIDTH):
                target[i] += new[i]
        else:
            for i in range(_WIDTH):
                target[i] += new[i] - old[i]
    for variant_key, old in before.items():
        if variant_key not in after:  # cannot happen (variants are never removed), but stay exact
            target = totals.setdefault((experiment_key, variant_key), [0] * _WIDTH)
            for i in range(_WIDTH):
                target[i] -= old[i]


def is_zero(vector: list[float]) -> bool:
    return all(x == 0 for x in vector)
