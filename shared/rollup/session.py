"""One session's events within one experiment, and what it contributes to each variant's totals.

The rollup keeps every session's state and, when new events arrive, adds
``contribution(after) - contribution(before)`` to the variant totals. Contributions follow the raw
results query exactly, so the two agree:

- an event is identified by (variant, event_id), as ``abacus.events`` deduplicates it; a repeat
  replaces the earlier copy instead of counting twice;
- a session counts once per variant it has any event in (``unique_sessions``), as *exposed* where it
  has an impression, and as *clean* where it was exposed to exactly one variant of the experiment;
- conversion value is the sum of its conversion events' values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.rollup.totals import TOTAL_FIELDS

EventKey = tuple[str, str]
"""(variant_key, event_id)"""
EventBody = tuple[str, float]
"""(event_type, conversion value or 0)"""

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

Contribution = dict[str, list[float]]
"""variant_key -> a vector in ``TOTAL_FIELDS`` order."""


@dataclass
class SessionState:
    events: dict[EventKey, EventBody] = field(default_factory=dict)

    def copy(self) -> SessionState:
        return SessionState(dict(self.events))

    def apply(self, variant_key: str, event_id: str, event_type: str, value: float | None) -> None:
        self.events[(variant_key, event_id)] = (event_type, value if value is not None and event_type == "conversion" else 0.0)

    def contribution(self) -> Contribution:
        per_variant: dict[str, list[float]] = {}
        for (variant_key, _), (event_type, value) in self.events.items():
            counts = per_variant.get(variant_key)
            if counts is None:
                counts = per_variant[variant_key] = [0] * 6  # five event counts, then the value
            slot = _COUNTED_TYPES.get(event_type)
            if slot is not None:
                counts[slot] += 1
            counts[5] += value
        exposed_variants = sum(1 for counts in per_variant.values() if counts[_IMPRESSIONS] > 0)
        out: Contribution = {}
        for variant_key, counts in per_variant.items():
            vector = [0] * _WIDTH
            vector[:5] = counts[:5]
            value = counts[5]
            exposed = counts[_IMPRESSIONS] > 0
            converted = exposed and counts[_CONVERSIONS] > 0
            vector[_UNIQUE_SESSIONS] = 1
            vector[_EXPOSED] = int(exposed)
            vector[_EXPOSED_CONVERTED] = int(converted)
            vector[_VALUE_TOTAL] = value
            if exposed and exposed_variants == 1:
                vector[_CLEAN_EXPOSED] = 1
                vector[_CLEAN_CONVERTED] = int(converted)
                vector[_CLEAN_VALUE_SUM] = value
                vector[_CLEAN_VALUE_SQUARES] = value * value
            elif exposed:
                vector[_MULTI_VARIANT_SHARE] = 1 / exposed_variants
            out[variant_key] = vector
        return out


def add_difference(totals: dict[str, list[float]], before: Contribution, after: Contribution) -> None:
    """``totals[variant] += after[variant] - before[variant]`` for every variant in either."""
    for variant_key in before.keys() | after.keys():
        old = before.get(variant_key)
        new = after.get(variant_key)
        target = totals.get(variant_key)
        if target is None:
            target = totals[variant_key] = [0] * _WIDTH
        for i in range(_WIDTH):
            target[i] += (new[i] if new is not None else 0) - (old[i] if old is not None else 0)


def is_zero(vector: list[float]) -> bool:
    return all(x == 0 for x in vector)
