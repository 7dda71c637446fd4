"""Per-variant rollups computed in ClickHouse, one row per (experiment, variant).

The inner query folds events into one row per session (FINAL makes a beacon that arrived twice
count once); the outer one folds sessions into variants. Besides the nine counts of the API,
it returns the sufficient statistics the analysis needs over *exposed* sessions (with an
impression), leaving out sessions exposed to more than one variant of the experiment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from clickhouse_connect.driver.client import Client

RESULTS_SQL = """
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
    FROM abacus.events FINAL
    WHERE experiment_key IN {keys:Array(String)} {time_filter}
    GROUP BY experiment_key, variant_key, session_id
)
GROUP BY experiment_key, variant_key
"""


@dataclass(frozen=True)
class VariantRollup:
    impressions: int = 0
    cta_clicks: int = 0
    form_starts: int = 0
    form_submits: int = 0
    conversions: int = 0
    unique_sessions: int = 0
    exposed_sessions: int = 0
    exposed_converted: int = 0
    value_total: float = 0.0
    clean_exposed: int = 0
    clean_converted: int = 0
    clean_value_sum: float = 0.0
    clean_value_sum_squares: float = 0.0
    multi_variant_share: float = 0.0

    @property
    def conversion_rate(self) -> float:
        return self.exposed_converted / self.exposed_sessions if self.exposed_sessions else 0.0


def fetch_rollups(
    client: Client, keys: list[str], start: datetime | None, end: datetime | None
) -> dict[tuple[str, str], VariantRollup]:
    conditions = []
    parameters: dict[str, object] = {"keys": keys}
    if start is not None:
        conditions.append("AND received_at >= {start:DateTime64(3, 'UTC')}")
        parameters["start"] = start
    if end is not None:
        conditions.append("AND received_at < {end:DateTime64(3, 'UTC')}")
        parameters["end"] = end
    sql = RESULTS_SQL.replace("{time_filter}", " ".join(conditions))
    result = client.query(sql, parameters=parameters)
    rollups = {}
    for row in result.result_rows:
        experiment_key, variant_key, *numbers = row
        rollups[(experiment_key, variant_key)] = VariantRollup(*numbers)
    return rollups
