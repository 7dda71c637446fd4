"""Turn the rows of `metric_statistics_sql` into the stats package's sufficient statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from query_api.stats.models import ProportionStats, SampleMeanStats
from query_api.stats.ratio import RatioStats

from .sql import MetricQuery


@dataclass(frozen=True)
class VariantMetrics:
    sessions: int
    binomial: dict[str, ProportionStats]  # per event type: sessions with at least one such event
    ratios: dict[str, RatioStats]  # "numerator/denominator"
    value: SampleMeanStats
    capped_value: SampleMeanStats | None
    value_cap: float | None


def variant_metrics(query: MetricQuery, rows: Sequence[Sequence[object]]) -> dict[str, VariantMetrics]:
    """{variant_key: VariantMetrics} from the query's result rows, for a query of one cohort."""
    return {key: metrics for (_, key), metrics in cohort_metrics(query, rows).items()}


def cohort_metrics(query: MetricQuery, rows: Sequence[Sequence[object]]) -> dict[tuple[object, str], VariantMetrics]:
    """{(cohort, variant_key): VariantMetrics} from the query's result rows (columns in the query's order)."""
    result = {}
    for row in rows:
        values = list(row)
        cohort = values.pop(0)
        key, n = str(values.pop(0)), int(values.pop(0))  # type: ignore[call-overload]
        binomial = {kind: ProportionStats(n, int(values.pop(0))) for kind in query.event_types}  # type: ignore[call-overload]
        ratios = {}
        for numerator, denominator in query.ratios:
            num_sum, num_sq, den_sum, den_sq, cross = (float(values.pop(0)) for _ in range(5))  # type: ignore[arg-type]
            ratios[f"{numerator}/{denominator}"] = RatioStats(n, num_sum, num_sq, den_sum, den_sq, cross)
        value = SampleMeanStats(n, float(values.pop(0)), float(values.pop(0)))  # type: ignore[arg-type]
        capped, cap = None, None
        if "cap_percentile" in query.parameters:
            capped = SampleMeanStats(n, float(values.pop(0)), float(values.pop(0)))  # type: ignore[arg-type]
            cap = float(values.pop(0))  # type: ignore[arg-type]
        result[(cohort, key)] = VariantMetrics(n, binomial, ratios, value, capped, cap)
    return result
