"""GET /api/v1/experiments/results (per-variant counts with their analysis) and its time series."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.params import FromQuery, QueryParameter

from query_api.auth import requires_analyst
from query_api.errors import BadQuery
from query_api.results_query import fetch_rollup_totals, fetch_rollups
from query_api.service import QueryService, in_thread
from query_api.timeseries_query import fetch_timeseries
from shared.registry.models import Experiment
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


def variant_body(variant_key: str, rollup: VariantRollup) -> dict[str, object]:
    """Exactly the nine keys the original API returned per variant."""
    return {
        "variant_key": variant_key,
        "impressions": rollup.impressions,
        "cta_clicks": rollup.cta_clicks,
        "form_starts": rollup.form_starts,
        "form_submits": rollup.form_submits,
        "conversions": rollup.conversions,
        "unique_sessions": rollup.unique_sessions,
        "conversion_rate": float(rollup.conversion_rate),
        "conversion_value_total": float(rollup.value_total),
    }


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


@get("/api/v1/experiments/results", guards=[requires_analyst], tags=["results"])
async def experiment_results(
    request: Request,
    experiment_key: FromQuery[str | None] = None,
    from_: Annotated[str | None, QueryParameter(name="from")] = None,
    to: FromQuery[str | None] = None,
    confidence: FromQuery[float] = 0.95,
    sequential: FromQuery[bool] = False,
) -> Response[list[dict[str, object]]]:
    service: QueryService = request.app.state.query_service
    start, end = parse_instant("from", from_), parse_instant("to", to)
    if start is not None and end is not None and start >= end:
        raise BadQuery("from", "from must be earlier than to")
    level = parse_confidence(confidence)
    body, source = await in_thread(build_results, service, experiment_key, start, end, level, sequential)
    return Response(body, headers={"X-Abacus-Source": source})


def build_results(
    service: QueryService,
    experiment_key: str | None,
    start: datetime | None,
    end: datetime | None,
    confidence: float,
    sequential: bool,
) -> tuple[list[dict[str, object]], str]:
    """The body, and where its totals came from: ``rollup`` or ``events``."""
    experiments = experiments_for(service, experiment_key)
    keys = [e.experiment_key for e in experiments]
    if start is None and end is None and service.rollup_is_live():
        source, rollups = "rollup", fetch_rollup_totals(service.clickhouse.client(), keys)
    else:
        source, rollups = "events", fetch_rollups(service.clickhouse.client(), keys, start, end)
    empty = VariantRollup()
    body = []
    for experiment in experiments:
        pairs = [(v, rollups.get((experiment.experiment_key, v.variant_key), empty)) for v in experiment.variants]
        multi_variant_sessions = round(sum(r.multi_variant_share for _, r in pairs))
        body.append(
            {
                "experiment_key": experiment.experiment_key,
                "name": experiment.name,
                "enabled": experiment.enabled,
                "archived": experiment.archived,
                "version": experiment.version,
                "from": start.isoformat() if start else None,
                "to": end.isoformat() if end else None,
                "variants": [variant_body(v.variant_key, r) for v, r in pairs],
                "analysis": analyze_experiment(
                    [variant_input(v, r) for v, r in pairs],
                    confidence=confidence,
                    sequential=sequential,
                    multi_variant_sessions=multi_variant_sessions,
                ),
            }
        )
    return body, source


@get("/api/v1/experiments/results/timeseries", guards=[requires_analyst], tags=["results"])
async def experiment_timeseries(
    request: Request,
    experiment_key: FromQuery[str],
    interval: FromQuery[Literal["day", "hour"]] = "day",
    confidence: FromQuery[float] = 0.95,
) -> dict[str, object]:
    service: QueryService = request.app.state.query_service
    level = parse_confidence(confidence)
    return await in_thread(build_timeseries, service, experiment_key, interval, level)


def build_timeseries(service: QueryService, key: str, interval: str, confidence: float) -> dict[str, object]:
    experiment = experiments_for(service, key)[0]
    points = fetch_timeseries(service.clickhouse.client(), key, interval)
    variants = []
    for variant in experiment.variants:
        exposed = converted = 0
        series = []
        for bucket, new_exposed, new_converted in points.get(variant.variant_key, []):
            exposed += new_exposed
            converted += new_converted
            rate, low, high = rate_interval(converted, exposed, confidence)
            series.append(
                {
                    "bucket": bucket.replace(tzinfo=timezone.utc).isoformat() if bucket.tzinfo is None else bucket.isoformat(),
                    "exposed_sessions": exposed,
                    "converted_sessions": converted,
                    "conversion_rate": rate,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
        variants.append({"variant_key": variant.variant_key, "is_control": variant.is_control, "points": series})
    return {"experiment_key": key, "interval": interval, "confidence": confidence, "variants": variants}


RESULTS_ROUTES = [experiment_results, experiment_timeseries]
