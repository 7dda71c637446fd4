"""Cumulative exposure and conversion per time bucket, for plotting an experiment over time.

A session counts as exposed from the bucket of its first impression, and as converted from the
bucket where it had both an impression and a conversion. Sessions exposed to more than one
variant are left out, as in the analysis.
"""

from __future__ import annotations

from datetime import datetime

from clickhouse_connect.driver.client import Client

INTERVALS = {"day": "toStartOfDay", "hour": "toStartOfHour"}

TIMESERIES_SQL = """
SELECT variant_key, bucket, countIf(kind = 'exposed') AS exposed, countIf(kind = 'converted') AS converted
FROM
(
    SELECT
        variant_key,
        arrayJoin(
            if(converted_at IS NULL,
               [('exposed', {bucket_fn}(exposed_at))],
               [('exposed', {bucket_fn}(exposed_at)), ('converted', {bucket_fn}(greatest(exposed_at, assumeNotNull(converted_at))))])
        ) AS point,
        point.1 AS kind,
        point.2 AS bucket
    FROM
    (
        SELECT
            variant_key,
            session_id,
            minIf(received_at, event_type = 'impression') AS exposed_at,
            if(countIf(event_type = 'conversion') > 0, minIf(received_at, event_type = 'conversion'), NULL) AS converted_at,
            count() OVER (PARTITION BY session_id) AS variants_seen
        FROM abacus.events FINAL
        WHERE experiment_key = {key:String}
        GROUP BY variant_key, session_id
        HAVING countIf(event_type = 'impression') > 0
    )
    WHERE variants_seen = 1
)
GROUP BY variant_key, bucket
ORDER BY variant_key, bucket
"""


def fetch_timeseries(client: Client, key: str, interval: str) -> dict[str, list[tuple[datetime, int, int]]]:
    """Per variant: (bucket start, sessions exposed in it, sessions converted in it), in time order."""
    sql = TIMESERIES_SQL.replace("{bucket_fn}", INTERVALS[interval])
    points: dict[str, list[tuple[datetime, int, int]]] = {}
    for variant_key, bucket, exposed, converted in client.query(sql, parameters={"key": key}).result_rows:
        points.setdefault(variant_key, []).append((bucket, exposed, converted))
    return points
