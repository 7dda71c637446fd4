"""One session's events within one experiment, and what it contributes to each variant's totals.

The rollup keeps every session's state and, when new events arrive, adds
``contribution(after) - contribution(before)`` to the variant totals. Contributions follow the raw
results query exactly, so the two agree:

- an event is identified by (variant, event_id), as ``abacus.events`` deduplicates it; a repeat
  replaces the earlier copy instead of counting twice;
- a session counts once per variant it has any event in (``unique_sessions``), as *exposed* where it
  has an impression, and as *clean* where it was exposed to exactly one variant of the experiment;
- conversion value is the sum of its conversion events' values;
- its *cohort minute* is the UTC minute of its first impression in the experiment (any variant),
  where its whole contribution is filed, so windows of whole minutes (hours, days) select sessions
  by first exposure, and a phase that starts at an instant cuts at most one minute.

The state keeps its events (as ``abacus.rollup_events`` holds them, one row each) plus running
counts per variant, so folding an event and computing a contribution cost the same however long the
session is. It is built only of structs the garbage collector does not track and dicts of them and
of strings and numbers, which it does not track either: a roller's cache holds hundreds of thousands
of sessions, and the full collections that walked them were 40 % of its time (a worker's too, when
the roller runs in its process).
"""

from __future__ import annotations

import msgspec

from shared.rollup.totals import ROLLUP_EVENT_TYPES, TOTAL_FIELDS, event_pairs

_WIDTH = len(TOTAL_FIELDS)
_BASE_WIDTH = TOTAL_FIELDS.index("clean_with_cta_click")
"""The fields before the metric sums (``_metric_sums``)."""
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
) = range(_BASE_WIDTH)
_MS_PER_MINUTE = 60_000
NEVER_EXPOSED = 0
"""The cohort minute (seconds since 1970-01-01 UTC) of a session without an impression."""

Contribution = dict[str, list[float]]
"""variant_key -> a vector in ``TOTAL_FIELDS`` order."""


UNCHANGED, ADDED, REPLACED = 0, 1, 2
"""What ``SessionState.apply`` did with an event."""

Summary = tuple[int, int, list[tuple]]
"""(cohort minute, variants exposed, per variant (variant_key, impressions, cta_clicks, form_starts,
form_submits, conversions, value)): all a session's contribution depends on."""


class _Event(msgspec.Struct, frozen=True, gc=False):
    event_type: str
    value: float
    at_ms: int


class _Variant(msgspec.Struct, gc=False):
    """One variant's events in a session (event_id -> event) and their running counts."""

    events: dict[str, _Event] = msgspec.field(default_factory=dict)
    impressions: int = 0
    cta_clicks: int = 0
    form_starts: int = 0
    form_submits: int = 0
    conversions: int = 0
    value: float = 0.0

    def count(self, event_type: str, value: float, sign: int) -> None:
        if event_type == "impression":
            self.impressions += sign
        elif event_type == "conversion":
            self.conversions += sign
        elif event_type == "cta_click":
            self.cta_clicks += sign
        elif event_type == "form_start":
            self.form_starts += sign
        elif event_type == "form_submit":
            self.form_submits += sign
        if value:
            self.value += sign * value

    def part(self, variant_key: str) -> tuple:
        return (variant_key, self.impressions, self.cta_clicks, self.form_starts, self.form_submits, self.conversions, self.value)


class SessionState(msgspec.Struct, gc=False):
    # No reference cycles can form here (gc=False requires it): a state holds only its variants,
    # which hold only their events.
    variants: dict[str, _Variant] = msgspec.field(default_factory=dict)
    first_ms: int | None = None
    """Receive time (epoch ms) of the first impression in any variant."""
    rows: tuple | None = None
    """The roller's rows of ``summary()`` (worker/rollup_store.py), kept until the state next
    changes: what a step added for the session is what the next step touching it subtracts.
    ``apply`` lets go of them whenever it changes the state, which is how the roller tells the
    states a step changed."""

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
    def cohort_minute(self) -> int:
        """The UTC minute of the first impression, as seconds since 1970-01-01; ``NEVER_EXPOSED``
        without one."""
        first = self.first_ms
        return NEVER_EXPOSED if first is None else first // _MS_PER_MINUTE * 60

    def __len__(self) -> int:
        return sum(len(variant.events) for variant in self.variants.values())

    def events(self) -> dict[tuple[str, str], tuple[str, float]]:
        """(variant_key, event_id) -> (event_type, value): what the session holds, for comparisons."""
        return {
            (variant_key, event_id): (event.event_type, event.value)
            for variant_key, variant in self.variants.items()
            for event_id, event in variant.events.items()
        }

    def apply(self, variant_key: str, event_id: str, event_type: str, value: float | None, at_ms: int = 0) -> int:
        """Fold one event in (received at ``at_ms``): ``UNCHANGED`` (0) when the session already
        held exactly this event, ``ADDED``, or ``REPLACED`` (it held another copy)."""
        value = value if value is not None and event_type == "conversion" else 0.0
        variant = self.variants.get(variant_key)
        if variant is None:
            variant = self.variants[variant_key] = _Variant()
        events = variant.events
        old = events.get(event_id)
        if old is None:
            # A new event, nearly every one the roller folds: counted inline (``_Variant.count``
            # with sign 1), as this runs once per event.
            events[event_id] = _Event(event_type, value, at_ms)
            if event_type == "impression":
                variant.impressions += 1
                first = self.first_ms
                if first is None or at_ms < first:
                    self.first_ms = at_ms
            elif event_type == "cta_click":
                variant.cta_clicks += 1
            elif event_type == "conversion":
                variant.conversions += 1
                variant.value += value
            elif event_type == "form_start":
                variant.form_starts += 1
            elif event_type == "form_submit":
                variant.form_submits += 1
            self.rows = None
            return ADDED
        if old.event_type == event_type and old.value == value and old.at_ms == at_ms:
            return UNCHANGED
        # A repeat with other contents replaces the earlier copy, as the table's FINAL does.
        self.rows = None
        variant.events[event_id] = _Event(event_type, value, at_ms)
        variant.count(old.event_type, old.value, -1)
        variant.count(event_type, value, 1)
        if old.event_type == "impression" or event_type == "impression":
            times = [
                event.at_ms
                for each in self.variants.values()
                for event in each.events.values()
                if event.event_type == "impression"
            ]
            self.first_ms = min(times) if times else None
        return REPLACED

    def summary(self) -> Summary:
        """What the session contributes, as the roller hands it to ClickHouse (a copy: later
        changes to the state leave it as it was)."""
        exposed = 0
        parts = []
        for variant_key, variant in self.variants.items():
            if variant.impressions > 0:
                exposed += 1
            parts.append(variant.part(variant_key))
        return self.cohort_minute, exposed, parts

    def contribution(self) -> Contribution:
        """What the session adds to each variant's totals, in Python: the roller has ClickHouse
        compute it from ``summary()`` with the SQL of shared/rollup/results_sql.py; this one
        states the same arithmetic where tests can check it against that SQL."""
        _, exposed_variants, parts = self.summary()
        out: Contribution = {}
        for variant_key, impressions, cta_clicks, form_starts, form_submits, conversions, value in parts:
            exposed = impressions > 0
            converted = exposed and conversions > 0
            vector = [
                impressions,
                cta_clicks,
                form_starts,
                form_submits,
                conversions,
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
            clean = exposed and exposed_variants == 1
            if clean:
                vector[_CLEAN_EXPOSED] = 1
                vector[_CLEAN_CONVERTED] = int(converted)
                vector[_CLEAN_VALUE_SUM] = value
                vector[_CLEAN_VALUE_SQUARES] = value * value
            elif exposed:
                vector[_MULTI_VARIANT_SHARE] = 1 / exposed_variants
            vector += _metric_sums(dict(zip(ROLLUP_EVENT_TYPES, (cta_clicks, form_starts, form_submits, conversions))), clean)
            out[variant_key] = vector
        return out


def _metric_sums(counts: dict[str, int], clean: bool) -> list[float]:
    """The metric fields of a session's vector (``TOTAL_FIELDS`` after multi_variant_share)."""
    if not clean:
        return [0] * (_WIDTH - _BASE_WIDTH)
    with_any = [int(counts[kind] > 0) for kind in ROLLUP_EVENT_TYPES[:3]]
    sums = [x for kind in ROLLUP_EVENT_TYPES for x in (counts[kind], counts[kind] * counts[kind])]
    return [*with_any, *sums, *(counts[a] * counts[b] for a, b in event_pairs())]


CohortTotals = dict[tuple[str, str, int], list[float]]
"""(experiment_key, variant_key, cohort minute) -> a vector in ``TOTAL_FIELDS`` order."""


def add_difference(
    totals: CohortTotals,
    experiment_key: str,
    before: Contribution,
    after: Contribution,
    before_cohort: int = 0,
    after_cohort: int = 0,
) -> None:
    """``totals[(experiment, variant, after_cohort)] += after[variant]`` and
    ``totals[(experiment, variant, before_cohort)] -= before[variant]`` for every variant in either;
    one subtraction per field when the session stayed in its cohort (the usual case)."""
    same_cohort = before_cohort == after_cohort
    for variant_key, new in after.items():
        key = (experiment_key, variant_key, after_cohort)
        target = totals.get(key)
        old = before.get(variant_key) if same_cohort else None
        if old is None:
            totals[key] = new[:] if target is None else [t + n for t, n in zip(target, new)]
        elif target is None:
            totals[key] = [n - o for n, o in zip(new, old)]
        else:
            totals[key] = [t + n - o for t, n, o in zip(target, new, old)]
    for variant_key, old in before.items():
        if not same_cohort or variant_key not in after:
            key = (experiment_key, variant_key, before_cohort)
            target = totals.get(key)
            totals[key] = [-o for o in old] if target is None else [t - o for t, o in zip(target, old)]


def is_zero(vector: list[float]) -> bool:
    return all(x == 0 for x in vector)
