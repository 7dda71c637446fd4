"""Where one experiment's per-phase totals come from, and so what the answer says about them.

A session belongs to the phase its first impression falls in, and the rollup keeps totals per UTC
day of first exposure, so every day that no phase boundary cuts belongs to one phase whole: its
rollup rows are that phase's, exactly. Only a day a phase starts in (at an instant other than
midnight) needs the events, and only the sessions first exposed that day (the cohort semi-join of
`fetch_cohort_totals`), grouped by phase; when the rollup says no session was first exposed that
day, not even that. Before, every experiment with two or more phases was grouped from all its
events (seconds at 10M events); now the common case is a few rollup rows per variant and day.

`Source` names where the numbers came from ("rollup", "events", or both when a boundary day came
from the events); the results answer reports it per experiment and in `X-Abacus-Source`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from query_api.results_phases import PHASE_INDEX, add_totals, fetch_phase_totals, phase_starts
from query_api.results_query import fetch_cohort_totals, fetch_rollup_day_totals, fetch_rollup_days
from query_api.results_types import ResultsFreshness, Source
from query_api.stats.phases import Phase
from shared.rollup.protocol import Freshness
from shared.rollup.totals import TOTAL_FIELDS, VariantRollup

_DAY = dt.timedelta(days=1)


def combine(sources: list[Source]) -> Source:
    """One name for several sources: "rollup+events" as soon as both contributed."""
    parts = {part for source in sources for part in source.split("+")}
    if parts == {"rollup"}:
        return "rollup"
    return "events" if parts <= {"events"} else "rollup+events"


@dataclass(frozen=True)
class PhaseTotals:
    by_phase: list[dict[str, VariantRollup]]
    """Per phase, in order: {variant_key: totals of its sessions first exposed in that phase}."""
    source: Source


def boundary_days(phases: list[Phase]) -> list[dt.date]:
    """The UTC days a later phase starts in at an instant other than midnight: split between phases."""
    days = set()
    for start in phase_starts(phases):
        utc = start.astimezone(dt.timezone.utc)
        if utc != utc.replace(hour=0, minute=0, second=0, microsecond=0):
            days.add(utc.date())
    return sorted(days)


def _phase_of_day(phases: list[Phase], day: dt.date) -> int:
    """The (0-based) phase of every session first exposed on a day no boundary cuts (as PHASE_INDEX)."""
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
    return sum(1 for start in phase_starts(phases) if start <= midnight)


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


def phase_totals_from_rollup(
    client: Client, key: str, phases: list[Phase], start: dt.datetime | None, end: dt.datetime | None
) -> PhaseTotals:
    """Per-phase totals from the rollup's per-day rows (all time, or a window of whole UTC days),
    with only the cut days' sessions grouped from the events."""
    cut = set(boundary_days(phases))
    by_phase: list[dict[str, VariantRollup]] = [{} for _ in phases]
    cut_days_with_sessions = set()
    for variant_key, day, totals in fetch_rollup_day_totals(client, key, start, end):
        if day in cut:
            if any(getattr(totals, name) for name in TOTAL_FIELDS):
                cut_days_with_sessions.add(day)
            continue
        phase = by_phase[_phase_of_day(phases, day)]
        phase[variant_key] = add_totals([phase.get(variant_key, VariantRollup()), totals])
    starts: dict[str, object] = {"phase_starts": phase_starts(phases)}
    for day in sorted(cut_days_with_sessions):
        rows = fetch_cohort_totals(client, [key], _midnight(day), _midnight(day) + _DAY, PHASE_INDEX, starts)
        for (_, variant_key, index), totals in rows.items():
            phase = by_phase[int(index)]  # type: ignore[call-overload]
            phase[variant_key] = add_totals([phase.get(variant_key, VariantRollup()), totals])
    return PhaseTotals(by_phase, "rollup+events" if cut_days_with_sessions else "rollup")


def phase_totals_from_events(
    client: Client, key: str, phases: list[Phase], start: dt.datetime | None, end: dt.datetime | None
) -> PhaseTotals:
    return PhaseTotals(fetch_phase_totals(client, key, phases, start, end), "events")


def source_headers(source: Source, freshness: Freshness | None) -> dict[str, str]:
    """Where the numbers came from and, when the rollup gave any of them, what it had not folded
    yet: the events the workers have stored (or are storing) for these experiments, and the
    oldest one's age. Numbers from the events are as current as the events."""
    if "rollup" not in source or freshness is None:
        return {"X-Abacus-Source": source, "X-Abacus-Unfolded-Events": "0", "X-Abacus-Behind-Ms": "0"}
    return {
        "X-Abacus-Source": source,
        "X-Abacus-Unfolded-Events": str(freshness.unfolded_events),
        "X-Abacus-Behind-Ms": str(freshness.behind_ms),
    }


def results_freshness(counts: Source, analysis: Source, freshness: Freshness | None) -> ResultsFreshness:
    """The body's account of the same, per experiment."""
    from_rollup = "rollup" in combine([counts, analysis]) and freshness is not None
    unfolded = freshness.unfolded_events if from_rollup and freshness is not None else 0
    behind_ms = freshness.behind_ms if from_rollup and freshness is not None else 0
    message = None
    if unfolded:
        message = f"The rollup had not folded {unfolded} stored event(s) yet (the oldest {behind_ms} ms old)."
    if counts != analysis:
        note = f"Counts from the {counts.replace('+', ' and the ')}, analysis from the {analysis.replace('+', ' and the ')}."
        message = f"{message} {note}" if message else note
    return ResultsFreshness(counts, analysis, bool(unfolded), unfolded, behind_ms, message)


Points = dict[str, list[tuple[dt.datetime, int, int]]]


def phase_days_from_rollup(client: Client, key: str, start: dt.datetime | None, end: dt.datetime | None) -> tuple[Points, Source]:
    """Daily (exposed, converted) points of the sessions first exposed in [start, end) (a phase):
    the rollup's rows for the days inside it, and for a day the phase starts or ends within, that
    day's share of its cohort from the events (only when the rollup has sessions on that day)."""
    first = start.astimezone(dt.timezone.utc).date() if start is not None else None
    last = end.astimezone(dt.timezone.utc).date() if end is not None else None
    rollup_end = None if end is None or last is None else end if end == _midnight(last) else _midnight(last) + _DAY
    points = fetch_rollup_days(client, key, _midnight(first) if first else None, rollup_end)
    partial = {}
    if start is not None and first is not None and start != _midnight(first):
        partial[first] = (start, _midnight(first) + _DAY)
    if end is not None and last is not None and end != _midnight(last):
        low = max(start, _midnight(last)) if start is not None else _midnight(last)
        partial[last] = (low, end)
    from_events = False
    for day, (low, high) in partial.items():
        bucket = _midnight(day)
        had_sessions = any(b == bucket and exposed for series in points.values() for b, exposed, _ in series)
        for variant_key in points:
            points[variant_key] = [p for p in points[variant_key] if p[0] != bucket]
        if not had_sessions:
            continue
        from_events = True
        for (_, variant_key, _), totals in fetch_cohort_totals(client, [key], low, high).items():
            if totals.clean_exposed:
                points.setdefault(variant_key, []).append((bucket, totals.clean_exposed, totals.clean_converted))
    for series in points.values():
        series.sort(key=lambda point: point[0])
    return points, "rollup+events" if from_events else "rollup"
