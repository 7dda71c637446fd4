"""GET /api/v1/experiments/results (per-variant counts with their analysis) and its time series,
answered as typed structs (so the OpenAPI schema is the real one)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

import msgspec

from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.params import FromQuery, QueryParameter

from query_api.auth import requires_analyst
from query_api.errors import BadQuery
from query_api.results_query import fetch_event_buckets, fetch_rollup_days, fetch_rollup_totals, fetch_rollups, whole_days
from query_api.service import QueryService, in_thread
from shared.registry.models import Experiment
from shared.rollup.protocol import Freshness
from shared.rollup.totals import VariantRollup
from shared.stats import ProportionStats, SampleMeanStats, VariantInput, analyze_experiment, rate_interval, validate_confidence


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


class VariantCounts(msgspec.Struct):
    """Exactly the nine keys the original API returned per variant, in its order."""

    variant_key: str
    impressions: int
    cta_clicks: int
    form_starts: int
    form_submits: int
    conversions: int
    unique_sessions: int
    conversion_rate: float
    conversion_value_total: float


class ExperimentResults(msgspec.Struct):
    experiment_key: str
    name: str
    enabled: bool
    archived: bool
    version: int
    from_: str | None = msgspec.field(name="from")
    """The window's start: the sessions first exposed at or after it (None: all time)."""
    to: str | None
    """The window's end (exclusive)."""
    variants: list[VariantCounts]
    analysis: dict[str, Any]


class TimePoint(msgspec.Struct):
    bucket: str
    """Start of the day (or hour) of first exposure; the counts are cumulative up to its end."""
    exposed_sessions: int
    converted_sessions: int
    conversion_rate: float | None
    ci_low: float | None
    ci_high: float | None


class VariantSeries(msgspec.Struct):
    variant_key: str
    is_control: bool
    points: list[TimePoint]


class Timeseries(msgspec.Struct):
    experiment_key: str
    interval: str
    confidence: float
    variants: list[VariantSeries]


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


def variant_input(variant, rollup: VariantRollup) -> VariantInput:  # type: ignore[no-untyped-def]
    return VariantInput(
        variant_key=variant.variant_key,
        is_control=variant.is_control,
        allocation=variant.allocation,
        conversions=ProportionStats(n=rollup.clean_exposed, converted=rollup.clean_converted),
        value=SampleMeanStats(n=rollup.clean_exposed, sum=rollup.clean_value_sum, sum_squares=rollup.clean_value_sum_squares),
    )


def experiments_for(service: QueryService, key: str | None) -> list[Experiment]:
    snapshot = service.store.snapshot()
    if key is None:
        return snapshot.active()
    experiment = snapshot.find(key)  # archived experiments keep their results
    if experiment is None:
        raise NotFoundException(f"No experiment {key}")
    return [experiment]


def source_headers(source: str, freshness: Freshness | None) -> dict[str, str]:
    """Where the numbers came from and, for the rollup, what it had not folded yet: the events
    the workers have stored (or are storing) for these experiments, and the oldest one's age."""
    if source != "rollup" or freshness is None:
        return {"X-Abacus-Source": source, "X-Abacus-Unfolded-Events": "0", "X-Abacus-Behind-Ms": "0"}
    return {
        "X-Abacus-Source": source,
        "X-Abacus-Unfolded-Events": str(freshness.unfolded_events),
        "X-Abacus-Behind-Ms": str(freshness.behind_ms),
    }


@get("/api/v1/experiments/results", guards=[requires_analyst], tags=["results"])
async def experiment_results(
    request: Request,
    experiment_key: FromQuery[str | None] = None,
    from_: Annotated[str | None, QueryParameter(name="from")] = None,
    to: FromQuery[str | None] = None,
    confidence: FromQuery[float] = 0.95,
    sequential: FromQuery[bool] = False,
) -> Response[list[ExperimentResults]]:
    """Per-variant counts and their analysis. A ``from``/``to`` window selects the sessions first
    exposed in it (their events count whenever they arrived). ``X-Abacus-Source`` says whether the
    totals came from the rollup (all time, or whole UTC days) or from the events;
    ``X-Abacus-Unfolded-Events`` and ``X-Abacus-Behind-Ms`` what the rollup had not folded yet."""
    service: QueryService = request.app.state.query_service
    start, end = parse_instant("from", from_), parse_instant("to", to)
    if start is not None and end is not None and start >= end:
        raise BadQuery("from", "from must be earlier than to")
    level = parse_confidence(confidence)
    body, headers = await in_thread(build_results, service, experiment_key, start, end, level, sequential)
    return Response(body, headers=headers)


def build_results(
    service: QueryService,
    experiment_key: str | None,
    start: datetime | None,
    end: datetime | None,
    confidence: float,
    sequential: bool,
) -> tuple[list[ExperimentResults], dict[str, str]]:
    """The body, and headers saying where its totals came from (``rollup`` or ``events``)."""
    experiments = experiments_for(service, experiment_key)
    keys = [e.experiment_key for e in experiments]
    freshness = service.rollup_freshness(keys) if whole_days(start, end) else None
    if freshness is not None and freshness.current:
        source, rollups = "rollup", fetch_rollup_totals(service.clickhouse.client(), keys, start, end)
    else:
        source, rollups = "events", fetch_rollups(service.clickhouse.client(), keys, start, end)
    empty = VariantRollup()
    body = []
    for experiment in experiments:
        pairs = [(v, rollups.get((experiment.experiment_key, v.variant_key), empty)) for v in experiment.variants]
        multi_variant_sessions = round(sum(r.multi_variant_share for _, r in pairs))
        body.append(
            ExperimentResults(
                experiment_key=experiment.experiment_key,
                name=experiment.name,
                enabled=experiment.enabled,
                archived=experiment.archived,
                version=experiment.version,
                from_=start.isoformat() if start else None,
                to=end.isoformat() if end else None,
                variants=[variant_body(v.variant_key, r) for v, r in pairs],
                analysis=analyze_experiment(
                    [variant_input(v, r) for v, r in pairs],
                    confidence=confidence,
                    sequential=sequential,
                    multi_variant_sessions=multi_variant_sessions,
                ),
            )
        )
    return body, source_headers(source, freshness)


@get("/api/v1/experiments/results/timeseries", guards=[requires_analyst], tags=["results"])
async def experiment_timeseries(
    request: Request,
    experiment_key: FromQuery[str],
    interval: FromQuery[Literal["day", "hour"]] = "day",
    confidence: FromQuery[float] = 0.95,
) -> Response[Timeseries]:
    """Cumulative exposed and converted sessions per day (or hour) of first exposure, leaving out
    sessions exposed to more than one variant. Daily points come from the rollup when it is
    current, hourly ones from the events; the headers say which, as for the results."""
    service: QueryService = request.app.state.query_service
    level = parse_confidence(confidence)
    body, headers = await in_thread(build_timeseries, service, experiment_key, interval, level)
    return Response(body, headers=headers)


def build_timeseries(service: QueryService, key: str, interval: str, confidence: float) -> tuple[Timeseries, dict[str, str]]:
    experiment = experiments_for(service, key)[0]
    freshness = service.rollup_freshness([key]) if interval == "day" else None
    if freshness is not None and freshness.current:
        source, points = "rollup", fetch_rollup_days(service.clickhouse.client(), key)
    else:
        source, points = "events", fetch_event_buckets(service.clickhouse.client(), key, interval)
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
    return Timeseries(key, interval, confidence, variants), source_headers(source, freshness)


RESULTS_ROUTES = [experiment_results, experiment_timeseries]
