"""GET /api/v1/experiments/results: per-variant counts (and their analysis) for analysts."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from litestar import Request, get
from litestar.exceptions import NotFoundException
from litestar.params import FromQuery, QueryParameter

from query_api.auth import requires_analyst
from query_api.errors import BadQuery
from query_api.results_query import VariantRollup, fetch_rollups
from query_api.service import QueryService, in_thread
from shared.registry.models import Experiment

VARIANT_KEYS = (
    "variant_key",
    "impressions",
    "cta_clicks",
    "form_starts",
    "form_submits",
    "conversions",
    "unique_sessions",
    "conversion_rate",
    "conversion_value_total",
)


def parse_instant(field: str, raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise BadQuery(field, f"{field} must be an ISO-8601 date or time, got {raw!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def variant_body(variant_key: str, rollup: VariantRollup) -> dict[str, object]:
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
) -> list[dict[str, object]]:
    service: QueryService = request.app.state.query_service
    start, end = parse_instant("from", from_), parse_instant("to", to)
    if start is not None and end is not None and start >= end:
        raise BadQuery("from", "from must be earlier than to")
    return await in_thread(build_results, service, experiment_key, start, end)


def build_results(
    service: QueryService, experiment_key: str | None, start: datetime | None, end: datetime | None
) -> list[dict[str, object]]:
    experiments = experiments_for(service, experiment_key)
    rollups = fetch_rollups(service.clickhouse.client(), [e.experiment_key for e in experiments], start, end)
    empty = VariantRollup()
    body = []
    for experiment in experiments:
        variant_rollups = [(v, rollups.get((experiment.experiment_key, v.variant_key), empty)) for v in experiment.variants]
        body.append(
            {
                "experiment_key": experiment.experiment_key,
                "name": experiment.name,
                "enabled": experiment.enabled,
                "archived": experiment.archived,
                "version": experiment.version,
                "from": start.isoformat() if start else None,
                "to": end.isoformat() if end else None,
                "variants": [variant_body(v.variant_key, r) for v, r in variant_rollups],
            }
        )
    return body


RESULTS_ROUTES = [experiment_results]
