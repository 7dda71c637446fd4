"""The metrics' sufficient statistics from the rollup's totals, when it carries them.

The rollup keeps, per variant and minute of first exposure, the clean sessions with at least one
event of each built-in type and the sums, squares and pairwise products of their per-session
counts (shared/rollup/totals.py), so binomial and ratio metrics of those types need no pass over
the events. Custom event types and a value cap's quantile are not in it: a plan that needs them
is computed from the events (query_api/metrics/sql.py), with the same definitions.
"""

from __future__ import annotations

from query_api.metrics.rows import VariantMetrics
from query_api.stats.models import ProportionStats, SampleMeanStats
from query_api.stats.ratio import RatioStats
from shared.rollup.totals import ROLLUP_EVENT_TYPES, VariantRollup


def rollup_carries(event_types: tuple[str, ...], ratios: tuple[tuple[str, str], ...], cap_fraction: float | None) -> bool:
    """Whether the rollup's totals hold every statistic these metrics need."""
    kinds = {*event_types, *(kind for pair in ratios for kind in pair)}
    return cap_fraction is None and kinds <= set(ROLLUP_EVENT_TYPES)


def metrics_from_totals(
    totals: VariantRollup, event_types: tuple[str, ...], ratios: tuple[tuple[str, str], ...]
) -> VariantMetrics:
    """What `query_api.metrics.rows.cohort_metrics` makes of the events' query, from the totals."""
    n = totals.clean_exposed
    binomial = {kind: ProportionStats(n, _sessions_with(totals, kind)) for kind in event_types}
    ratio_stats = {}
    for numerator, denominator in ratios:
        ratio_stats[f"{numerator}/{denominator}"] = RatioStats(
            n,
            getattr(totals, f"clean_{numerator}_sum"),
            getattr(totals, f"clean_{numerator}_squares"),
            getattr(totals, f"clean_{denominator}_sum"),
            getattr(totals, f"clean_{denominator}_squares"),
            _cross(totals, numerator, denominator),
        )
    value = SampleMeanStats(n, totals.clean_value_sum, totals.clean_value_sum_squares)
    return VariantMetrics(n, binomial, ratio_stats, value, None, None)


def _sessions_with(totals: VariantRollup, kind: str) -> int:
    return totals.clean_converted if kind == "conversion" else int(getattr(totals, f"clean_with_{kind}"))


def _cross(totals: VariantRollup, a: str, b: str) -> float:
    """Sum over sessions of count(a) * count(b): a column per pair, in ROLLUP_EVENT_TYPES order."""
    if a == b:
        return float(getattr(totals, f"clean_{a}_squares"))
    first, second = sorted((a, b), key=ROLLUP_EVENT_TYPES.index)
    return float(getattr(totals, f"clean_{first}_x_{second}"))
