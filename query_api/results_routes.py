"""GET /api/v1/experiments/results (per-variant counts with their analysis) and its time series,
answered as typed structs (so the OpenAPI schema is the real one)."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated, Literal, NamedTuple

import msgspec
from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.params import FromQuery, QueryParameter

from query_api.auth import requires_analyst
from query_api.errors import BadQuery
from query_api.results_analysis import ALL_PHASES, add_totals, analyse
from query_api.results_examples import results_example, timeseries_example
from query_api.results_phases import cohort_start, custom_event_types, metric_plan
from query_api.results_query import fetch_event_buckets, fetch_rollup_totals, fetch_rollups, whole_minutes
from query_api.results_sources import (
    PhaseTotals,
    combine,
    phase_buckets_from_rollup,
    phase_metrics,
    phase_totals_from_events,
    phase_totals_from_rollup,
    results_freshness,
    source_headers,
)
from query_api.results_types import ExperimentResults, PhaseSummary, Source, TimePoint, Timeseries, VariantCounts, VariantSeries
from query_api.service import QueryService, in_thread
from query_api.stats import rate_interval, validate_confidence
from query_api.stats.phases import Phase, split_phases
from shared.registry.models import DefinitionError, Experiment, MetricName, metric_problem
from shared.rollup.totals import VariantRollup

METRIC_NAME = re.compile(MetricName.__metadata__[0].pattern)


def parse_instant(field: str, raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise BadQuery(field, f"{field} must be an ISO-8601 date or time, got {raw!r}") from None
    if not 1970 <= moment.year <= 2200:
        # Outside what DateTime64 holds; ClickHouse would refuse the parameter with a 500.
        raise BadQuery(field, f"{field} must be between the years 1970 and 2200")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def parse_confidence(raw: float) -> float:
    try:
        return validate_confidence(raw)
    except ValueError as exc:
        raise BadQuery("confidence", str(exc)) from None


def variant_body(variant_key: str, rollup: VariantRollup) -> VariantCounts:
    return VariantCounts(
        variant_key=variant_key,
        impressions=rollup.impressions,
        cta_clicks=rollup.cta_clicks,
        form_starts=rollup.form_starts,
        form_submits=rollup.form_submits,
        conversions=rollup.conversions,
        unique_sessions=rollup.unique_sessions,
        conversion_rate=float(rollup.conversion_rate),
        conversion_value_total=float(rollup.value_total),
    )


def experiments_for(service: QueryService, key: str | None) -> list[Experiment]:
    snapshot = service.store.snapshot()
    if key is None:
        return snapshot.active()
    experiment = snapshot.find(key)  # archived experiments keep their results
    if experiment is None:
        raise NotFoundException(f"No experiment {key}")
    return [experiment]


@get("/api/v1/experiments/results", guards=[requires_analyst], tags=["results"], opt={"openapi_example": results_example})
async def experiment_results(
    request: Request,
    experiment_key: FromQuery[str | None] = None,
    from_: Annotated[str | None, QueryParameter(name="from")] = None,
    to: FromQuery[str | None] = None,
    confidence: FromQuery[float] = 0.95,
    sequential: FromQuery[bool] = False,
    phase: FromQuery[str | None] = None,
    metrics: FromQuery[str | None] = None,
) -> Response[list[ExperimentResults]]:
    """Per-variant counts and their analysis. A ``from``/``to`` window selects the sessions first
    exposed in it (their events count whenever they arrived). ``phases`` lists every allocation
    phase of the definition history with its own SRM check; ``analysis`` covers the current phase,
    or ``phase=N`` (1-based), or ``phase=all`` (stratified by phase; not with ``sequential``).
    ``metrics=all`` (or a comma-separated list of metric names) adds metrics to those the
    definition names. ``X-Abacus-Source`` says where the numbers came from: the rollup (all time,
    or whole UTC minutes), the events, or ``rollup+events`` when some came from each (a minute a
    phase started in); extra metrics of a custom event type or a capped value come from the
    events, other metrics with the counts; ``X-Abacus-Unfolded-Events`` and ``X-Abacus-Behind-Ms`` what the
    rollup had not folded yet; each experiment's ``freshness`` says the same per experiment."""
    service: QueryService = request.app.state.query_service
    query = results_query(experiment_key, from_, to, confidence, sequential, phase, metrics)
    body, headers = await in_thread(build_results, service, query)
    return Response(body, headers=headers)


def results_query(
    experiment_key: str | None,
    from_: str | None,
    to: str | None,
    confidence: float,
    sequential: bool,
    phase: str | None,
    metrics: str | None,
) -> ResultsQuery:
    """The results parameters checked (a 400 naming the first bad one)."""
    start, end = parse_instant("from", from_), parse_instant("to", to)
    if start is not None and end is not None and start >= end:
        raise BadQuery("from", "from must be earlier than to")
    level = parse_confidence(confidence)
    selection = parse_phase(phase)
    if selection == ALL_PHASES and sequential:
        raise BadQuery("phase", "phase=all is the fixed-horizon stratified analysis; sequential=true needs one phase")
    requested, everything = parse_metrics(metrics)
    return ResultsQuery(experiment_key, start, end, level, sequential, selection, requested, everything)


def parse_phase(raw: str | None) -> int | str | None:
    """None (the current phase), a 1-based phase number, or ALL_PHASES."""
    if raw is None or raw == "current":
        return None
    if raw == ALL_PHASES:
        return ALL_PHASES
    if raw.isdigit() and 1 <= int(raw) <= 10_000:
        return int(raw)
    raise BadQuery("phase", f"phase must be a phase number (1, 2, ...), 'current' or 'all', got {raw!r}")


def parse_metrics(raw: str | None) -> tuple[tuple[str, ...], bool]:
    """(metric names asked for, whether `all` was)."""
    if raw is None or not raw.strip():
        return (), False
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if len(names) > 20:
        raise BadQuery("metrics", "At most 20 metrics per request")
    for name in names:
        if name == ALL_PHASES:
            continue
        if not METRIC_NAME.fullmatch(name):
            raise BadQuery("metrics", f"{name!r} is not a metric name (an event type, 'a/b' or value_per_session)")
        try:
            metric_problem(name, "metrics")
        except DefinitionError as exc:
            raise BadQuery("metrics", str(exc).rsplit(" - at ", 1)[0]) from None
    return tuple(n for n in names if n != ALL_PHASES), ALL_PHASES in names


class ResultsQuery(NamedTuple):
    experiment_key: str | None
    start: datetime | None
    end: datetime | None
    confidence: float
    sequential: bool
    phase: int | str | None
    metrics: tuple[str, ...] = ()
    all_metrics: bool = False


def only_phase(experiment: Experiment) -> Phase:
    """The one phase of a definition whose history cannot be read (never expected: every version is stored)."""
    return Phase(1, experiment.updated_at, None, {v.variant_key: v.allocation for v in experiment.variants})


def build_results(service: QueryService, query: ResultsQuery) -> tuple[list[ExperimentResults], dict[str, str]]:
    """The body, and headers saying where its numbers came from (``rollup``, ``events``, or
    ``rollup+events`` when some came from each)."""
    experiments = experiments_for(service, query.experiment_key)
    start, end = query.start, query.end
    histories = service.store.histories([e.experiment_key for e in experiments]) if experiments else {}
    phases = {e.experiment_key: split_phases(histories.get(e.experiment_key, [])) or [only_phase(e)] for e in experiments}
    for experiment in experiments:
        count = len(phases[experiment.experiment_key])
        if isinstance(query.phase, int) and query.phase > count:
            raise BadQuery("phase", f"{experiment.experiment_key} has {count} phase(s), so there is no phase {query.phase}")
    client = service.clickhouse.client()
    keys = [e.experiment_key for e in experiments]
    freshness = service.rollup_freshness(keys) if keys and whole_minutes(start, end) else None
    from_rollup = freshness is not None and freshness.current
    one_phase = [key for key in keys if len(phases[key]) == 1]
    rollups: dict = {}
    if one_phase:
        # Experiments that never changed their allocations: all their totals in one query.
        rollups = (fetch_rollup_totals if from_rollup else fetch_rollups)(client, one_phase, start, end)
    body, sources = [], []
    for experiment in experiments:
        key = experiment.experiment_key
        its_phases = phases[key]
        if len(its_phases) == 1:
            totals = PhaseTotals(
                [{v.variant_key: rollups.get((key, v.variant_key), VariantRollup()) for v in experiment.variants}],
                "rollup" if from_rollup else "events",
            )
        else:
            totals = (phase_totals_from_rollup if from_rollup else phase_totals_from_events)(client, key, its_phases, start, end)
        customs = custom_event_types(client, key) if query.all_metrics else ()
        plan = metric_plan(experiment, query.metrics, query.all_metrics, customs)
        metrics_by_phase, analysis_source = phase_metrics(client, key, its_phases, plan, totals, start, end)
        sources += [totals.source, analysis_source]
        selection = ALL_PHASES if query.phase == ALL_PHASES else (len(its_phases) if query.phase is None else query.phase) - 1
        summary, analysis = analyse(
            experiment, its_phases, totals.by_phase, metrics_by_phase, plan, selection, query.confidence, query.sequential
        )
        all_time = {
            v.variant_key: add_totals([phase.get(v.variant_key, VariantRollup()) for phase in totals.by_phase])
            for v in experiment.variants
        }
        body.append(
            ExperimentResults(
                experiment_key=key,
                name=experiment.name,
                enabled=experiment.enabled,
                archived=experiment.archived,
                version=experiment.version,
                from_=start.isoformat() if start else None,
                to=end.isoformat() if end else None,
                variants=[variant_body(v.variant_key, all_time[v.variant_key]) for v in experiment.variants],
                analysis=analysis,
                phases=msgspec.convert(summary, list[PhaseSummary]),
                analysis_phase=analysis["phase"],
                freshness=results_freshness(totals.source, analysis_source, freshness),
            )
        )
    return body, source_headers(combine(sources) if sources else "rollup" if from_rollup else "events", freshness)


@get(
    "/api/v1/experiments/results/timeseries",
    guards=[requires_analyst],
    tags=["results"],
    opt={"openapi_example": timeseries_example},
)
async def experiment_timeseries(
    request: Request,
    experiment_key: FromQuery[str],
    interval: FromQuery[Literal["day", "hour"]] = "day",
    confidence: FromQuery[float] = 0.95,
    phase: FromQuery[str | None] = None,
) -> Response[Timeseries]:
    """Cumulative exposed and converted sessions per day (or hour) of first exposure, leaving out
    sessions exposed to more than one variant. The phase is chosen as for the results: the
    current one by default, ``phase=N``, or ``phase=all`` (every session). Points come from the
    rollup's per-minute totals when it is current (a minute the phase starts or ends within: that
    minute's cohort from the events), else from the events; the headers say which."""
    service: QueryService = request.app.state.query_service
    level = parse_confidence(confidence)
    body, headers = await in_thread(build_timeseries, service, experiment_key, interval, level, parse_phase(phase))
    return Response(body, headers=headers)


def build_timeseries(
    service: QueryService, key: str, interval: str, confidence: float, selection: int | str | None = None
) -> tuple[Timeseries, dict[str, str]]:
    experiment = experiments_for(service, key)[0]
    phases = split_phases(service.store.histories([key]).get(key, [])) or [only_phase(experiment)]
    if isinstance(selection, int) and selection > len(phases):
        raise BadQuery("phase", f"{key} has {len(phases)} phase(s), so there is no phase {selection}")
    number = len(phases) if selection is None else selection
    start = end = None
    if number != ALL_PHASES and len(phases) > 1:
        chosen = phases[int(number) - 1]
        # Phase 1 also holds the sessions first exposed before the first version (as the results).
        start = cohort_start(chosen.start) if chosen.number > 1 else None
        end = cohort_start(chosen.end) if chosen.end is not None else None
    freshness = service.rollup_freshness([key])
    client = service.clickhouse.client()
    source: Source
    if freshness is not None and freshness.current:
        points, source = phase_buckets_from_rollup(client, key, interval, start, end)
    else:
        source, points = "events", fetch_event_buckets(client, key, interval, start, end)
    variants = []
    for variant in experiment.variants:
        exposed = converted = 0
        series = []
        for bucket, new_exposed, new_converted in points.get(variant.variant_key, []):
            exposed += new_exposed
            converted += new_converted
            rate, low, high = rate_interval(converted, exposed, confidence)
            series.append(TimePoint(bucket.isoformat(), exposed, converted, rate, low, high))
        variants.append(VariantSeries(variant.variant_key, variant.is_control, series))
    phase = ALL_PHASES if number == ALL_PHASES else int(number)
    return Timeseries(key, interval, confidence, variants, phase), source_headers(source, freshness)  # type: ignore[arg-type]


RESULTS_ROUTES = [experiment_results, experiment_timeseries]
