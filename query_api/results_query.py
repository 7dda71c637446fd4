"""Per-variant totals, one row per (experiment, variant), from the rollup or from raw events.

The rollup (``abacus.rollup_totals``, kept by the roller) answers in milliseconds whatever the
data size, but only for all time. A ``from``/``to`` window, or a deployment without a running
roller, is answered from ``abacus.events``: the inner query folds events into one row per session
(FINAL makes a beacon that arrived twice count once), the outer one folds sessions into variants.
Besides the nine counts of the API both return the sufficient statistics the analysis needs over
*exposed* sessions (with an impression), leaving out sessions exposed to more than one variant.
"""

from __future__ import annotations

from datetime import datetime

from clickhouse_connect.driver.client import Client

from shared.rollup.results_sql import EVENTS_SOURCE, variant_totals_sql
from shared.rollup.totals import TOTAL_FIELDS, VariantRollup

RESULTS_SQL = variant_totals_sql(EVENTS_SOURCE)
ROLLUP_TOTALS_SQL = (
    "SELECT experiment_key, variant_key, "
    + ", ".join(f"sum({name}) AS total_{name}" for name in TOTAL_FIELDS)
    + " FROM abacus.rollup_totals WHERE experiment_key IN {keys:Array(String)} GROUP BY experiment_key, variant_key"
)


def fetch_rollup_totals(client: Client, keys: list[str]) -> dict[tuple[str, str], VariantRollup]:
    """All-time totals from the rollup: a few rows per variant, whatever the number of events."""
    return _by_variant(client.query(ROLLUP_TOTALS_SQL, parameters={"keys": keys}).result_rows)


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
    return _by_variant(client.query(sql, parameters=parameters).result_rows)


def _by_variant(rows: list) -> dict[tuple[str, str], VariantRollup]:
    rollups = {}
    for experiment_key, variant_key, *numbers in rows:
        rollups[(experiment_key, variant_key)] = VariantRollup(*numbers)
    return rollups
