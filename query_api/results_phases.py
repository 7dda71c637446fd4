"""What the analysis of one experiment needs besides its all-time counts: its phases, each phase's
per-variant statistics, and the definition's extra metrics, all as sufficient statistics from SQL.

Phases come from the definition history (`query_api.stats.phases.split_phases`): every change of
allocations starts one. A session belongs to the phase its first impression in the experiment falls
in, phases counted in whole UTC minutes (`cohort_start`: the minute of a change still belongs to the
phase before); the first phase also holds the sessions first exposed before the definition's first
version (backfilled events), so no exposed session is left out of every phase.

An experiment that never changed its allocations has one phase, its totals are the ones the
results body already has (from the rollup when it can answer), and nothing else is queried. With
several phases, one query over the events groups the sessions by phase (`PHASE_INDEX`). Metrics
beyond the conversion rate and the raw value per session come from the same totals when they are
binomial or ratio metrics of the built-in event types (the totals carry their statistics, from the
rollup or the events alike); a custom event type or a capped value needs one more query over the
events (`query_api.metrics.sql`), grouped by phase the same way.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client

from query_api.metrics.from_rollup import metrics_from_totals, rollup_carries
from query_api.metrics.rows import VariantMetrics, cohort_metrics
from query_api.metrics.sql import DEFAULT_EVENT_TYPES, metric_statistics_sql
from query_api.results_query import fetch_cohort_totals, first_exposure_window
from query_api.stats.phases import Phase
from shared.registry.models import VALUE_METRIC, Experiment
from shared.rollup.totals import TOTAL_FIELDS, VariantRollup

# The phase (0-based) a session's first impression falls in: how many later phases had started by
# then. A session never exposed counts in the first (it is in no analysis anyway).
PHASE_INDEX = (
    "arrayCount(b -> b <= ifNull(s_first_impression, toDateTime64(0, 3, 'UTC')), {phase_starts:Array(DateTime64(3, 'UTC'))})"
)
BUILT_IN_METRICS = ("conversion", VALUE_METRIC)
DEFAULT_RATIOS = (("form_submit", "form_start"),)
"""The ratio `metrics=all` adds: form submissions per form start."""


@dataclass(frozen=True)
class MetricPlan:
    """Which extra metrics one experiment's analysis needs, and the value cap (a fraction) if any."""

    event_types: tuple[str, ...] = ()
    ratios: tuple[tuple[str, str], ...] = ()
    cap_fraction: float | None = None
    names: tuple[str, ...] = field(default=())

    @property
    def needs_query(self) -> bool:
        return bool(self.names) or self.cap_fraction is not None


def metric_plan(
    experiment: Experiment, requested: tuple[str, ...], everything: bool, custom_events: tuple[str, ...] = ()
) -> MetricPlan:
    """The definition's primary and guardrail metrics plus those requested (`metrics=`), minus the
    two every analysis has; `everything` adds a binomial metric per event type and the default ratio."""
    wanted = [experiment.primary_metric, *experiment.guardrail_metrics, *requested]
    if everything:
        wanted += [*DEFAULT_EVENT_TYPES, *custom_events, *("/".join(pair) for pair in DEFAULT_RATIOS)]
    names = tuple(dict.fromkeys(name for name in wanted if name not in BUILT_IN_METRICS))
    event_types = tuple(name for name in names if "/" not in name)
    ratios = tuple(tuple(name.split("/")) for name in names if "/" in name)
    cap = experiment.value_cap_percentile / 100.0 if experiment.value_cap_percentile is not None else None
    return MetricPlan(event_types, ratios, cap, names)  # type: ignore[arg-type]


def custom_event_types(client: Client, key: str) -> tuple[str, ...]:
    """Event types of the experiment beyond the built-in ones (for `metrics=all`)."""
    rows = client.query(
        "SELECT DISTINCT event_type FROM abacus.events WHERE experiment_key = {key:String} "
        "AND event_type NOT IN ('impression', 'cta_click', 'form_start', 'form_submit', 'conversion') ORDER BY event_type",
        parameters={"key": key},
    ).result_rows
    return tuple(row[0] for row in rows)


def phase_starts(phases: list[Phase]) -> list[dt.datetime]:
    """Where each later phase's cohort starts: its start rounded up to a whole UTC minute."""
    return [cohort_start(phase.start) for phase in phases[1:]]


def cohort_start(moment: dt.datetime) -> dt.datetime:
    """The first whole UTC minute at or after ``moment``.

    A phase's sessions are those first exposed from there on: the minute an allocation changed
    in still belongs to the phase before. Pages pick a new split up within the registry's cache
    time (5 s) and a session keeps the variant it was first given, so that minute is a mix of
    both splits whichever phase gets it; giving it to the earlier phase keeps the current phase
    (the default analysis) pure, and makes every phase a range of whole minutes, which the
    rollup sums without reading a single event."""
    utc = moment.astimezone(dt.timezone.utc)
    floor = utc.replace(second=0, microsecond=0)
    return floor if floor == utc else floor + dt.timedelta(minutes=1)


def fetch_phase_totals(
    client: Client, key: str, phases: list[Phase], start: dt.datetime | None, end: dt.datetime | None
) -> list[dict[str, VariantRollup]]:
    """Per phase, in order: {variant_key: totals of the sessions first exposed in that phase (and window)}."""
    rows = fetch_cohort_totals(client, [key], start, end, PHASE_INDEX, {"phase_starts": phase_starts(phases)})
    by_phase: list[dict[str, VariantRollup]] = [{} for _ in phases]
    for (_, variant_key, index), totals in rows.items():
        by_phase[int(index)][variant_key] = totals  # type: ignore[call-overload]
    return by_phase


def fetch_phase_metrics(
    client: Client, key: str, phases: list[Phase], plan: MetricPlan, start: dt.datetime | None, end: dt.datetime | None
) -> list[dict[str, VariantMetrics]]:
    """Per phase, in order: {variant_key: the plan's metrics over its clean exposed sessions}."""
    conditions, parameters = first_exposure_window(start, end)
    parameters["phase_starts"] = phase_starts(phases)
    query = metric_statistics_sql(
        key,
        event_types=("conversion", *(e for e in plan.event_types if e != "conversion")),
        ratios=plan.ratios,
        cap_percentile=plan.cap_fraction,
        cohort=PHASE_INDEX,
        cohort_filter=" AND ".join(conditions) or "1",
    )
    rows = client.query(query.sql, parameters={**query.parameters, **parameters}).result_rows
    by_phase: list[dict[str, VariantMetrics]] = [{} for _ in phases]
    for (index, variant_key), metrics in cohort_metrics(query, rows).items():
        by_phase[int(index)][variant_key] = metrics  # type: ignore[call-overload]
    return by_phase


def phase_metrics_from_totals(
    plan: MetricPlan, totals_by_phase: list[dict[str, VariantRollup]]
) -> list[dict[str, VariantMetrics]] | None:
    """As ``fetch_phase_metrics``, from the phases' totals when they carry every statistic the
    plan needs (built-in event types, no value cap; query_api/metrics/from_rollup.py); else None."""
    event_types = ("conversion", *(e for e in plan.event_types if e != "conversion"))
    if not rollup_carries(event_types, plan.ratios, plan.cap_fraction):
        return None
    return [
        {variant_key: metrics_from_totals(totals, event_types, plan.ratios) for variant_key, totals in phase.items()}
        for phase in totals_by_phase
    ]


def add_totals(parts: list[VariantRollup]) -> VariantRollup:
    """The totals of several cohorts together (every field is a sum)."""
    return VariantRollup(*(sum(getattr(p, name) for p in parts) for name in TOTAL_FIELDS))
