"""Where one experiment's per-phase totals come from, and so what the answer says about them.

A session belongs to the phase its first impression falls in, and phases are counted in whole UTC
minutes (``results_phases.cohort_start``), while the rollup keeps totals per UTC minute of first
exposure: every minute belongs to one phase whole, so the rollup sums its rows by phase in one
query, exactly, without reading an event; the daily and hourly series of a phase likewise.

`Source` names where the numbers came from ("rollup", "events", or both when extra metrics came
from the events); the results answer reports it per experiment and in `X-Abacus-Source`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from query_api.metrics.rows import VariantMetrics
from query_api.results_phases import (
    MetricPlan,
    add_totals,
    fetch_phase_metrics,
    fetch_phase_totals,
    phase_metrics_from_totals,
    phase_starts,
)
from query_api.results_query import fetch_rollup_buckets, fetch_rollup_phase_totals
from query_api.results_types import ResultsFreshness, Source
from query_api.stats.phases import Phase
from shared.rollup.protocol import Freshness
from shared.rollup.totals import VariantRollup


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


def phase_totals_from_rollup(
    client: Client, key: str, phases: list[Phase], start: dt.datetime | None, end: dt.datetime | None
) -> PhaseTotals:
    """Per-phase totals from the rollup's per-minute rows: all time, or a window of whole UTC minutes."""
    by_phase: list[dict[str, VariantRollup]] = [{} for _ in phases]
    for variant_key, index, totals in fetch_rollup_phase_totals(client, key, phase_starts(phases), start, end):
        phase = by_phase[index]
        phase[variant_key] = add_totals([phase.get(variant_key, VariantRollup()), totals])
    return PhaseTotals(by_phase, "rollup")


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
    """Daily or hourly (exposed, converted) points of the sessions first exposed in [start, end),
    a phase's cohort (whole UTC minutes), from the rollup."""
    return fetch_rollup_buckets(client, key, interval, start, end), "rollup"
