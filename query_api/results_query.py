"""Per-variant totals, one row per (experiment, variant), from the rollup or from raw events.

Both select the same sessions: all of them for all time; for a ``from``/``to`` window, the
*exposure cohort*, sessions whose first impression in the experiment falls in the window (their
events count whenever they arrived). The rollup (``abacus.rollup_day_totals``, kept by the
rollers per UTC day of first exposure) answers all time and any window of whole UTC days by
summing days, in milliseconds whatever the data size. Other windows are answered from
``abacus.events``: the inner query folds events into one row per session (FINAL makes a beacon
that arrived twice count once), the outer one folds sessions into variants.
Besides the nine counts of the API both return the sufficient statistics the analysis needs over
*exposed* sessions (with an impression), leaving out sessions exposed to more than one variant.
"""

from __future__ import annotations

import datetime as dt

from clickhouse_connect.driver.client import Client

from shared.rollup.results_sql import EVENTS_SOURCE, NEVER_EXPOSED_DAY, variant_totals_sql
from shared.rollup.totals import TOTAL_FIELDS, VariantRollup

Totals = dict[tuple[str, str], VariantRollup]

_ROLLUP_SUMS = ", ".join(f"sum({name}) AS total_{name}" for name in TOTAL_FIELDS)
ROLLUP_TOTALS_SQL = (
    f"SELECT experiment_key, variant_key, {_ROLLUP_SUMS} FROM abacus.rollup_day_totals "
    "WHERE experiment_key IN {keys:Array(String)} {day_filter} GROUP BY experiment_key, variant_key"
)
ROLLUP_DAY_TOTALS_SQL = (
    f"SELECT variant_key, cohort_day, {_ROLLUP_SUMS} FROM abacus.rollup_day_totals "
    "WHERE experiment_key = {key:String} {day_filter} GROUP BY variant_key, cohort_day"
)
ROLLUP_DAYS_SQL = (
    "SELECT variant_key, cohort_day, sum(clean_exposed), sum(clean_converted) FROM abacus.rollup_day_totals "
    f"WHERE experiment_key = {{key:String}} AND cohort_day > '{NEVER_EXPOSED_DAY}' {{day_filter}} "
    "GROUP BY variant_key, cohort_day ORDER BY variant_key, cohort_day"
)
_BUCKETS = {"day": "toStartOfDay(s_first_impression)", "hour": "toStartOfHour(s_first_impression)"}


def whole_days(start: dt.datetime | None, end: dt.datetime | None) -> bool:
    """Whether a window is made of whole UTC days (either bound may be open)."""
    return all(bound is None or _is_midnight_utc(bound) for bound in (start, end))


def _day_filter(start: dt.datetime | None, end: dt.datetime | None) -> tuple[str, dict[str, object]]:
    """The rollup rows of the sessions first exposed in a window of whole UTC days (none: all)."""
    conditions = []
    parameters: dict[str, object] = {}
    if start is not None or end is not None:
        conditions.append(f"AND cohort_day > '{NEVER_EXPOSED_DAY}'")
    if start is not None:
        conditions.append("AND cohort_day >= {start:Date}")
        parameters["start"] = start.astimezone(dt.timezone.utc).date()
    if end is not None:
        conditions.append("AND cohort_day < {end:Date}")
        parameters["end"] = end.astimezone(dt.timezone.utc).date()
    return " ".join(conditions), parameters


def fetch_rollup_totals(
    client: Client, keys: list[str], start: dt.datetime | None = None, end: dt.datetime | None = None
) -> Totals:
    """Totals from the rollup: all time, or the sessions first exposed in a window of whole UTC
    days. A few rows per variant and day, whatever the number of events."""
    day_filter, parameters = _day_filter(start, end)
    sql = ROLLUP_TOTALS_SQL.replace("{day_filter}", day_filter)
    return _by_variant(client.query(sql, parameters={"keys": keys, **parameters}).result_rows)


def fetch_rollup_day_totals(
    client: Client, key: str, start: dt.datetime | None = None, end: dt.datetime | None = None
) -> list[tuple[str, dt.date, VariantRollup]]:
    """(variant, UTC day of first exposure, totals) from the rollup, all time or in a window of
    whole UTC days; 1970-01-01 holds the sessions never exposed."""
    day_filter, parameters = _day_filter(start, end)
    sql = ROLLUP_DAY_TOTALS_SQL.replace("{day_filter}", day_filter)
    rows = client.query(sql, parameters={"key": key, **parameters}).result_rows
    return [(variant_key, day, VariantRollup(*numbers)) for variant_key, day, *numbers in rows]


# The sessions first exposed in a window, found from impressions alone (a session whose first
# impression is before `end` has an impression before it), so only their events are grouped.
_COHORT_SESSIONS = (
    " AND (experiment_key, session_id) IN (SELECT experiment_key, session_id FROM abacus.events FINAL "
    "WHERE experiment_key IN {keys:Array(String)} AND event_type = 'impression' {before_end} "
    "GROUP BY experiment_key, session_id HAVING {first_in_window})"
)


def fetch_rollups(client: Client, keys: list[str], start: dt.datetime | None, end: dt.datetime | None) -> Totals:
    """Totals computed from abacus.events: all time, or the sessions first exposed in a window."""
    return {(e, v): totals for (e, v, _), totals in fetch_cohort_totals(client, keys, start, end).items()}


def first_exposure_window(start: dt.datetime | None, end: dt.datetime | None) -> tuple[list[str], dict[str, object]]:
    """SQL conditions (and their parameters) keeping the sessions first exposed in [start, end)."""
    conditions: list[str] = []
    parameters: dict[str, object] = {}
    if start is not None:
        conditions.append("s_first_impression >= {start:DateTime64(3, 'UTC')}")
        parameters["start"] = start
    if end is not None:
        conditions.append("s_first_impression < {end:DateTime64(3, 'UTC')}")
        parameters["end"] = end
    return conditions, parameters


def fetch_cohort_totals(
    client: Client,
    keys: list[str],
    start: dt.datetime | None,
    end: dt.datetime | None,
    cohort: str = "0",
    cohort_parameters: dict[str, object] | None = None,
) -> dict[tuple[str, str, object], VariantRollup]:
    """As ``fetch_rollups``, per (experiment, variant, cohort): ``cohort`` is an SQL expression over
    ``s_first_impression`` (a phase number, say) whose parameters come in ``cohort_parameters``."""
    conditions, window = first_exposure_window(start, end)
    parameters: dict[str, object] = {"keys": keys, **(cohort_parameters or {}), **window}
    source = EVENTS_SOURCE
    if conditions:
        first_in_window = " AND ".join(c.replace("s_first_impression", "min(received_at)") for c in conditions)
        before_end = "AND received_at < {end:DateTime64(3, 'UTC')}" if end is not None else ""
        source += _COHORT_SESSIONS.replace("{before_end}", before_end).replace("{first_in_window}", first_in_window)
    sql = variant_totals_sql(source, cohort=cohort, cohort_filter=" AND ".join(conditions) or "1")
    rows = client.query(sql, parameters=parameters).result_rows
    return {(e, v, c): VariantRollup(*numbers) for e, v, c, *numbers in rows}


def fetch_rollup_days(
    client: Client, key: str, start: dt.datetime | None = None, end: dt.datetime | None = None
) -> dict[str, list[tuple[dt.datetime, int, int]]]:
    """Per variant, from the rollup: (UTC day, sessions first exposed that day that saw only this
    variant, how many of them converted), in day order; all days, or a window of whole UTC days."""
    day_filter, parameters = _day_filter(start, end)
    sql = ROLLUP_DAYS_SQL.replace("{day_filter}", day_filter)
    points: dict[str, list[tuple[dt.datetime, int, int]]] = {}
    for variant_key, day, exposed, converted in client.query(sql, parameters={"key": key, **parameters}).result_rows:
        bucket = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
        points.setdefault(variant_key, []).append((bucket, exposed, converted))
    return points


def fetch_event_buckets(
    client: Client, key: str, interval: str, start: dt.datetime | None = None, end: dt.datetime | None = None
) -> dict[str, list[tuple[dt.datetime, int, int]]]:
    """As ``fetch_rollup_days``, per day or hour of first exposure, computed from abacus.events;
    all sessions, or those first exposed in [start, end) (a phase, say)."""
    window, parameters = first_exposure_window(start, end)
    conditions = ["s_first_impression IS NOT NULL", *window]
    parameters["keys"] = [key]
    sql = variant_totals_sql(EVENTS_SOURCE, cohort=_BUCKETS[interval], cohort_filter=" AND ".join(conditions))
    exposed_at, converted_at = 3 + TOTAL_FIELDS.index("clean_exposed"), 3 + TOTAL_FIELDS.index("clean_converted")
    rows = sorted(client.query(sql, parameters=parameters).result_rows, key=lambda row: (row[1], row[2]))
    points: dict[str, list[tuple[dt.datetime, int, int]]] = {}
    for row in rows:
        if row[exposed_at]:
            bucket = row[2] if row[2].tzinfo is not None else row[2].replace(tzinfo=dt.timezone.utc)
            points.setdefault(row[1], []).append((bucket, row[exposed_at], row[converted_at]))
    return points


def _is_midnight_utc(moment: dt.datetime) -> bool:
    utc = moment.astimezone(dt.timezone.utc)
    return (utc.hour, utc.minute, utc.second, utc.microsecond) == (0, 0, 0, 0)


def _by_variant(rows: list) -> Totals:
    rollups = {}
    for experiment_key, variant_key, *numbers in rows:
        rollups[(experiment_key, variant_key)] = VariantRollup(*numbers)
    return rollups
