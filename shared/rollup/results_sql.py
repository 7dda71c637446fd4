"""The one SQL definition of the per-variant totals, over any source of event rows.

The results endpoint runs it over ``abacus.events`` when it cannot use the rollup (a window that
is not whole UTC days, or a rollup that is not current); a rollup rebuild runs it over
``abacus.rollup_events``. One text for both keeps the two ways of counting identical.

Windows select an *exposure cohort*: the sessions whose first impression in the experiment
(``s_first_impression``, over all its variants) falls in the window. Their events count whenever
they arrived. ``{cohort}`` is what the rows are grouped by besides (experiment, variant): a
constant for plain totals, the UTC day of first exposure for the rollup's per-day rows, an hour
for the hourly time series. Sessions never exposed have a NULL first impression: they count in
all-time totals (``unique_sessions``, conversions without an impression) and in no window.
"""

from __future__ import annotations

_TOTALS_SELECT = """
SELECT
    experiment_key,
    variant_key,
    {cohort} AS cohort,
    sum(s_impressions) AS impressions,
    sum(s_cta_clicks) AS cta_clicks,
    sum(s_form_starts) AS form_starts,
    sum(s_form_submits) AS form_submits,
    sum(s_conversions) AS conversions,
    count() AS unique_sessions,
    countIf(s_impressions > 0) AS exposed_sessions,
    countIf(s_impressions > 0 AND s_conversions > 0) AS exposed_converted,
    sum(s_value) AS value_total,
    countIf(s_impressions > 0 AND s_exposed_variants = 1) AS clean_exposed,
    countIf(s_impressions > 0 AND s_conversions > 0 AND s_exposed_variants = 1) AS clean_converted,
    sumIf(s_value, s_impressions > 0 AND s_exposed_variants = 1) AS clean_value_sum,
    sumIf(s_value * s_value, s_impressions > 0 AND s_exposed_variants = 1) AS clean_value_sum_squares,
    -- A session exposed to k variants appears in k rows: weighting each by 1/k makes the
    -- experiment-wide sum the number of distinct such sessions.
    sumIf(1 / s_exposed_variants, s_impressions > 0 AND s_exposed_variants > 1) AS multi_variant_share
FROM
(
    SELECT
        experiment_key,
        variant_key,
        session_id,
        countIf(event_type = 'impression') AS s_impressions,
        countIf(event_type = 'cta_click') AS s_cta_clicks,
        countIf(event_type = 'form_start') AS s_form_starts,
        countIf(event_type = 'form_submit') AS s_form_submits,
        countIf(event_type = 'conversion') AS s_conversions,
        sumIf(ifNull(conversion_value, 0), event_type = 'conversion') AS s_value,
        sum(s_impressions > 0) OVER (PARTITION BY experiment_key, session_id) AS s_exposed_variants,
        min(if(s_impressions > 0, minIf(received_at, event_type = 'impression'), NULL))
            OVER (PARTITION BY experiment_key, session_id) AS s_first_impression
    FROM {source}
    GROUP BY experiment_key, variant_key, session_id
)
WHERE {cohort_filter}
GROUP BY experiment_key, variant_key, cohort
"""

EVENTS_SOURCE = "abacus.events FINAL WHERE experiment_key IN {keys:Array(String)}"
"""Raw events, deduplicated by FINAL (a beacon stored twice counts once)."""

ROLLUP_EVENTS_SOURCE = "abacus.rollup_events FINAL {shard_filter}"
"""What the roller has folded (a rebuild's snapshot of abacus.events), deduplicated the same way."""

COHORT_DAY = "ifNull(toDate(s_first_impression), toDate(0))"
"""The UTC day of a session's first impression; 1970-01-01 for a session never exposed."""

NEVER_EXPOSED_DAY = "1970-01-01"


def variant_totals_sql(source: str, cohort: str = "0", cohort_filter: str = "1") -> str:
    """One row per (experiment, variant, cohort): the keys, the cohort, then ``TOTAL_FIELDS``."""
    return _TOTALS_SELECT.replace("{source}", source).replace("{cohort_filter}", cohort_filter).replace("{cohort}", cohort)


def shard_condition(shard: int, shards: int, column: str = "experiment_key") -> str:
    """SQL true for the experiments a roller shard owns (``shared.rollup.protocol.shard_of``)."""
    return "1" if shards == 1 else f"CRC32({column}) % {int(shards)} = {int(shard)}"
