"""Where one experiment's per-phase totals come from, and so what the answer says about them.

A session belongs to the phase its first impression falls in, and the rollup keeps totals per UTC
minute of first exposure, so every minute that no phase start cuts belongs to one phase whole:
its rollup rows are that phase's, exactly, and the rollup sums them by phase in one query. Only a
minute a phase starts in (at an instant other than the minute's start) needs the events, and only
the sessions first exposed in that minute (`fetch_cohort_totals`, which reads just their rows),
grouped by phase; when the rollup says no session was first exposed then, not even that.

`Source` names where the numbers came from ("rollup", "events", or both when a cut minute came
from the events); the results answer reports it per experiment and in `X-Abacus-Source`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from query_api.metrics.rows import VariantMetrics
from query_api.results_phases import (
    PHASE_INDEX,
    MetricPlan,
    add_totals,
    fetch_phase_metrics,
    fetch_phase_totals,
    phase_metrics_from_totals,
    phase_starts,
)
from query_api.results_query import fetch_cohort_totals, fetch_rollup_buckets, fetch_rollup_phase_totals, is_minute
from query_api.results_types import ResultsFreshness, Source
from query_api.stats.phases import Phase
from shared.rollup.protocol import Freshness
from shared.rollup.totals import TOTAL_FIELDS, VariantRollup

_MINUTE = dt.timedelta(minutes=1)


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


def cut_minutes(phases: list[Phase]) -> list[dt.datetime]:
    """The UTC minutes a later phase starts in at an instant other than the minute's start: split
    between phases."""
    return sorted({_minute_of(start) for start in phase_starts(phases) if not is_minute(start)})


def _minute_of(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.timezone.utc).replace(second=0, microsecond=0)


def phase_totals_from_rollup(
    client: Client, key: str, phases: list[Phase], start: dt.datetime | None, end: dt.datetime | None
) -> PhaseTotals:
    """Per-phase totals from the rollup's per-minute rows (all time, or a window of whole UTC
    minutes), with only the cut minutes' sessions grouped from the events."""
    starts = phase_starts(phases)
    cuts = cut_minutes(phases)
    by_phase: list[dict[str, VariantRollup]] = [{} for _ in phases]
    cuts_with_sessions = set()
    for variant_key, index, cut, totals in fetch_rollup_phase_totals(client, key, starts, cuts, start, end):
        if cut is not None:
            if any(getattr(totals, name) for name in TOTAL_FIELDS):
                cuts_with_sessions.add(cut)
            continue
        phase = by_phase[index]
        phase[variant_key] = add_totals([phase.get(variant_key, VariantRollup()), totals])
    for minute in sorted(cuts_with_sessions):
        rows = fetch_cohort_totals(client, [key], minute, minute + _MINUTE, PHASE_INDEX, {"phase_starts": starts})
        for (_, variant_key, cohort), totals in rows.items():
            phase = by_phase[int(cohort)]  # type: ignore[call-overload]
            phase[variant_key] = add_totals([phase.get(variant_key, VariantRollup()), totals])
    return PhaseTotals(by_phase, "rollup+events" if cuts_with_sessions else "rollup")


def phase_metrics(
    client: Client,
    key: str,
    phases: list[Phase],
    plan: MetricPlan,
    totals: PhaseTotals,
    start: dt.datetime | None,
    end: dt.datetime | None,
) -> tuple[list[dict[str, VariantMetrics]] | None, Source]:
    """The plan's extra metrics per phase (None when it has none) and where they came from: with
    the totals when those carry them, else (a custom event type, a value cap) from the events."""
    if not plan.needs_query:
        return None, totals.source
    from_totals = phase_metrics_from_totals(plan, totals.by_phase)
    if from_totals is not None:
        return from_totals, totals.source
    return fetch_phase_metrics(client, key, phases, plan, start, end), "events"


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


def phase_buckets_from_rollup(
    client: Client, key: str, interval: str, start: dt.datetime | None, end: dt.datetime | None
) -> tuple[Points, Source]:
    """Daily or hourly (exposed, converted) points of the sessions first exposed in [start, end)
    (a phase): the rollup's rows for the whole minutes inside it, and for a minute the phase
    starts or ends within, that minute's share of its cohort from the events (only when the
    rollup has sessions in that minute)."""
    inner_start = None if start is None else _minute_of(start) if is_minute(start) else _minute_of(start) + _MINUTE
    inner_end = None if end is None else _minute_of(end)
    points = fetch_rollup_buckets(client, key, interval, inner_start, inner_end)
    partial = []  # (low, high): the parts of cut minutes inside [start, end); one when both cut the same minute
    if start is not None and not is_minute(start):
        after = _minute_of(start) + _MINUTE
        partial.append((start, after if end is None else min(after, end)))
    if end is not None and not is_minute(end):
        partial.append((_minute_of(end) if start is None else max(start, _minute_of(end)), end))
    from_events = False
    for low, high in dict.fromkeys(partial):
        if low >= high or not _rollup_has_sessions(client, key, _minute_of(low)):
            continue
        from_events = True
        bucket = _bucket_of(low, interval)
        for (_, variant_key, _), totals in fetch_cohort_totals(client, [key], low, high).items():
            if totals.clean_exposed:
                _add_point(points.setdefault(variant_key, []), bucket, totals.clean_exposed, totals.clean_converted)
    for series in points.values():
        series.sort(key=lambda point: point[0])
    return points, "rollup+events" if from_events else "rollup"


def _rollup_has_sessions(client: Client, key: str, minute: dt.datetime) -> bool:
    return any(
        exposed
        for series in fetch_rollup_buckets(client, key, "hour", minute, minute + _MINUTE).values()
        for _, exposed, _ in series
    )


def _bucket_of(moment: dt.datetime, interval: str) -> dt.datetime:
    utc = moment.astimezone(dt.timezone.utc)
    return (
        utc.replace(minute=0, second=0, microsecond=0)
        if interval == "hour"
        else utc.replace(hour=0, minute=0, second=0, microsecond=0)
    )


def _add_point(series: list[tuple[dt.datetime, int, int]], bucket: dt.datetime, exposed: int, converted: int) -> None:
    """Add to the bucket's point, or start it."""
    for index, (moment, old_exposed, old_converted) in enumerate(series):
        if moment == bucket:
            series[index] = (moment, old_exposed + exposed, old_converted + converted)
            return
    series.append((bucket, exposed, converted))
