"""One session's events within one experiment, and what it contributes to each variant's totals.

The rollup keeps every session's state and, when new events arrive, adds
``contribution(after) - contribution(before)`` to the variant totals. Contributions follow the raw
results query exactly, so the two agree:

- an event is identified by (variant, event_id), as ``abacus.events`` deduplicates it; a repeat
  replaces the earlier copy instead of counting twice;
- a session counts once per variant it has any event in (``unique_sessions``), as *exposed* where it
  has an impression, and as *clean* where it was exposed to exactly one variant of the experiment;
- conversion value is the sum of its conversion events' values;
- its *cohort day* is the UTC day of its first impression in the experiment (any variant), where
  its whole contribution is filed, so windows of whole days select sessions by first exposure.

The state keeps its events as parallel arrays (as ``abacus.rollup_events`` holds them, one row
each), plus running counts per variant, so folding an event and computing a contribution cost the
same however long the session is.
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
_MS_PER_DAY = 86_400_000
NEVER_EXPOSED = 0
"""The cohort day (days since 1970-01-01) of a session without an impression."""

Contribution = dict[str, list[float]]
"""variant_key -> a vector in ``TOTAL_FIELDS`` order."""


UNCHANGED, ADDED, REPLACED = 0, 1, 2
"""What ``SessionState.apply`` did with an event."""

Summary = tuple[int, int, list[tuple]]
"""(cohort day, variants exposed, per variant (variant_key, impressions, cta_clicks, form_starts,
form_submits, conversions, value)): all a session's contribution depends on."""


class SessionState:
    __slots__ = ("_events", "_counts", "_first_ms")

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], tuple[str, float, int]] = {}
        """(variant_key, event_id) -> (event_type, value, receive time in epoch ms)."""
        self._counts: dict[str, list[float]] = {}
        self._first_ms: int | None = None

    @classmethod
    def from_arrays(
        cls,
        variant_keys: list[str],
        event_ids: list[str],
        event_types: list[str],
        event_values: list[float],
        event_times: list[int] | None = None,
    ) -> SessionState:
        state = cls()
        for event in zip(variant_keys, event_ids, event_types, event_values, event_times or [0] * len(event_ids)):
            state.apply(*event)
        return state

    @property
    def cohort_day(self) -> int:
        """Days since 1970-01-01 (UTC) of the first impression; ``NEVER_EXPOSED`` without one."""
        first = self._first_ms
        return NEVER_EXPOSED if first is None else first // _MS_PER_DAY

    def __len__(self) -> int:
        return len(self._events)

    def events(self) -> dict[tuple[str, str], tuple[str, float]]:
        """(variant_key, event_id) -> (event_type, value): what the session holds, for comparisons."""
        return {key: (event_type, value) for key, (event_type, value, _) in self._events.items()}

    def apply(self, variant_key: str, event_id: str, event_type: str, value: float | None, at_ms: int = 0) -> int:
        """Fold one event in (received at ``at_ms``): ``UNCHANGED`` (0) when the session already
        held exactly this event, ``ADDED``, or ``REPLACED`` (it held another copy)."""
        value = value if value is not None and event_type == "conversion" else 0.0
        key = (variant_key, event_id)
        event = (event_type, value, at_ms)
        old = self._events.get(key)
        counts = self._counts.get(variant_key)
        if counts is None:
            counts = self._counts[variant_key] = [0, 0, 0, 0, 0, 0.0]
        self._events[key] = event
        if old is None:
            if event_type == "impression" and (self._first_ms is None or at_ms < self._first_ms):
                self._first_ms = at_ms
            outcome = ADDED
        else:
            if old == event:
                return UNCHANGED
            outcome = REPLACED
            # A repeat with other contents replaces the earlier copy, as the table's FINAL does.
            old_type, old_value, _ = old
            slot = _COUNTED_TYPES.get(old_type)
            if slot is not None:
                counts[slot] -= 1
            counts[_VALUE_SLOT] -= old_value
            if old_type == "impression" or event_type == "impression":
                times = [at for kind, _, at in self._events.values() if kind == "impression"]
                self._first_ms = min(times) if times else None
        slot = _COUNTED_TYPES.get(event_type)
        if slot is not None:
            counts[slot] += 1
        counts[_VALUE_SLOT] += value
        return outcome

    def summary(self) -> Summary:
        """What the session contributes, as the roller hands it to ClickHouse (a copy: later
        changes to the state leave it as it was)."""
        counts_by_variant = self._counts
        exposed = 0
        parts = []
        for variant_key, counts in counts_by_variant.items():
            if counts[_IMPRESSIONS] > 0:
                exposed += 1
            parts.append((variant_key, *counts))
        return self.cohort_day, exposed, parts

    def contribution(self) -> Contribution:
        """What the session adds to each variant's totals, in Python: the roller has ClickHouse
        compute it from ``summary()`` with the SQL of shared/rollup/results_sql.py; this one
        states the same arithmetic where tests can check it against that SQL."""
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


DayTotals = dict[tuple[str, str, int], list[float]]
"""(experiment_key, variant_key, cohort day) -> a vector in ``TOTAL_FIELDS`` order."""


def add_difference(
    totals: DayTotals, experiment_key: str, before: Contribution, after: Contribution, before_day: int = 0, after_day: int = 0
) -> None:
    """``totals[(experiment, variant, after_day)] += after[variant]`` and
    ``totals[(experiment, variant, before_day)] -= before[variant]`` for every variant in either;
    one subtraction per field when the session stayed on its day (the usual case)."""
    same_day = before_day == after_day
    for variant_key, new in after.items():
        key = (experiment_key, variant_key, after_day)
        target = totals.get(key)
        old = before.get(variant_key) if same_day else None
        if old is None:
            totals[key] = new[:] if target is None else [t + n for t, n in zip(target, new)]
        elif target is None:
            totals[key] = [n - o for n, o in zip(new, old)]
        else:
            totals[key] = [t + n - o for t, n, o in zip(target, new, old)]
    for variant_key, old in before.items():
        if not same_day or variant_key not in after:
            key = (experiment_key, variant_key, before_day)
            target = totals.get(key)
            totals[key] = [-o for o in old] if target is None else [t - o for t, o in zip(target, old)]


def is_zero(vector: list[float]) -> bool:
    return all(x == 0 for x in vector)
