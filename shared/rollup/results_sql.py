"""The one SQL definition of the per-variant totals, over any source of event rows.

The results endpoint runs it over ``abacus.events`` when it cannot use the rollup (a ``from``/``to``
window, or no roller running); a rollup rebuild runs it over ``abacus.rollup_sessions``. One text
for both keeps the two ways of counting identical.
"""

from __future__ import annotations

_TOTALS_SELECT = """
SELECT
    experiment_key,
    variant_key,
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
        sum(s_impressions > 0) OVER (PARTITION BY experiment_key, session_id) AS s_exposed_variants
    FROM {source}
    GROUP BY experiment_key, variant_key, session_id
)
GROUP BY experiment_key, variant_key
"""

EVENTS_SOURCE = "abacus.events FINAL WHERE experiment_key IN {keys:Array(String)} {time_filter}"
"""Raw events, deduplicated by FINAL (a beacon stored twice counts once)."""

ROLLUP_SESSIONS_SOURCE = """(
        SELECT experiment_key, session_id, variant_key, event_type, event_value AS conversion_value
        FROM abacus.rollup_sessions FINAL
        ARRAY JOIN variant_keys AS variant_key, event_types AS event_type, event_values AS event_value
    )"""
"""The rollup's session states, one row per distinct event they hold."""


def variant_totals_sql(source: str) -> str:
    """One row per (experiment, variant): the keys, then the ``TOTAL_FIELDS`` in order."""
    return _TOTALS_SELECT.replace("{source}", source)
