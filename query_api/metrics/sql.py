"""One ClickHouse query for the sufficient statistics of every metric of one experiment.

Per exposed session that saw only one variant (as the analysis has always counted), the inner query
counts each event type and totals the conversion value; the outer one reduces those per variant to
the few numbers the tests need:

* binomial metric per event type: sessions with at least one such event (`sessions_with_<event>`);
* ratio metric numerator / denominator (e.g. form_submit per form_start): sums of both counts, of
  their squares and of their product (`ratio_<i>_*`), for the delta method;
* value per session: sum and sum of squares, raw and winsorized: capped at the `cap_percentile`
  quantile of the positive per-session values of the whole experiment (all variants share the cap),
  computed in ClickHouse with quantileExact.

`cohort` groups the sessions besides their variant (an SQL expression over `s_first_impression`,
the session's first impression in the experiment: the phase it falls in, say) and is the rows'
first column; `cohort_filter` keeps the sessions first exposed in a window. The cap is computed
over every session the filter keeps, all cohorts together.

Event types are passed as query parameters ({event_0:String}, ...); only the column aliases derive
from the metric's position, never from user text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_EVENT_TYPES = ("cta_click", "form_start", "form_submit", "conversion")


@dataclass(frozen=True)
class MetricQuery:
    sql: str
    parameters: dict[str, object]
    event_types: tuple[str, ...]
    ratios: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def metric_statistics_sql(
    experiment_key: str,
    event_types: tuple[str, ...] = DEFAULT_EVENT_TYPES,
    ratios: tuple[tuple[str, str], ...] = (),
    cap_percentile: float | None = None,
    source: str = "abacus.events FINAL",
    cohort: str = "0",
    cohort_filter: str = "1",
) -> MetricQuery:
    """The query and its parameters; rows are (cohort, variant_key, sessions, sessions_with_...,
    ratio_..., value_...). The caller adds the parameters `cohort` and `cohort_filter` use."""
    if cap_percentile is not None and not 0.0 < cap_percentile < 1.0:
        raise ValueError("cap_percentile must be strictly between 0 and 1")
    kinds = tuple(dict.fromkeys([*event_types, *(t for pair in ratios for t in pair)]))
    parameters: dict[str, object] = {"experiment_key": experiment_key}
    per_session = []
    for index, kind in enumerate(kinds):
        parameters[f"event_{index}"] = kind
        per_session.append(f"countIf(event_type = {{event_{index}:String}}) AS s_{index}")
    column = {kind: f"s_{index}" for index, kind in enumerate(kinds)}
    outer = ["count() AS sessions"]
    outer += [f"countIf({column[kind]} > 0) AS sessions_with_{i}" for i, kind in enumerate(event_types)]
    for i, (numerator, denominator) in enumerate(ratios):
        n, d = column[numerator], column[denominator]
        outer += [
            f"sum({n}) AS ratio_{i}_numerator_sum",
            f"sum({n} * {n}) AS ratio_{i}_numerator_sum_squares",
            f"sum({d}) AS ratio_{i}_denominator_sum",
            f"sum({d} * {d}) AS ratio_{i}_denominator_sum_squares",
            f"sum({n} * {d}) AS ratio_{i}_cross_sum",
        ]
    outer += ["sum(s_value) AS value_sum", "sum(s_value * s_value) AS value_sum_squares"]
    cap_cte = ""
    if cap_percentile is not None:
        parameters["cap_percentile"] = cap_percentile
        # ifNull: with no positive value at all the cap is irrelevant; keep every value as it is.
        cap_cte = ", cap AS (SELECT ifNull(quantileExactIf({cap_percentile:Float64})(s_value, s_value > 0), 0) AS v FROM clean)"
        outer += [
            "sum(if((SELECT v FROM cap) > 0, least(s_value, (SELECT v FROM cap)), s_value)) AS capped_value_sum",
            "sum(pow(if((SELECT v FROM cap) > 0, least(s_value, (SELECT v FROM cap)), s_value), 2)) AS capped_value_sum_squares",
            "any((SELECT v FROM cap)) AS value_cap",
        ]
    sql = f"""
WITH sessions AS (
    SELECT
        variant_key,
        session_id,
        countIf(event_type = 'impression') AS s_impressions,
        {", ".join(per_session) or "0 AS s_none"},
        sumIf(ifNull(conversion_value, 0), event_type = 'conversion') AS s_value,
        sum(s_impressions > 0) OVER (PARTITION BY session_id) AS s_exposed_variants,
        min(if(s_impressions > 0, minIf(received_at, event_type = 'impression'), NULL))
            OVER (PARTITION BY session_id) AS s_first_impression
    FROM {source}
    WHERE experiment_key = {{experiment_key:String}}
    GROUP BY variant_key, session_id
),
clean AS (SELECT * FROM sessions WHERE s_impressions > 0 AND s_exposed_variants = 1 AND ({cohort_filter})){cap_cte}
SELECT {cohort} AS cohort, variant_key, {", ".join(outer)}
FROM clean
GROUP BY cohort, variant_key
ORDER BY cohort, variant_key
"""
    return MetricQuery(sql, parameters, tuple(event_types), tuple(ratios))
