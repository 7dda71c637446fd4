"""Per-variant totals, one row per (experiment, variant), from the rollup or from raw events.

Both select the same sessions: all of them for all time; for a ``from``/``to`` window, the
*exposure cohort*, sessions whose first impression in the experiment falls in the window (their
events count whenever they arrived). The rollup (``abacus.rollup_cohort_totals``, kept by the
rollers per UTC minute of first exposure) answers all time and any window of whole UTC minutes
by summing minutes, in milliseconds whatever the data size. Other windows are answered from
``abacus.events``: the inner query folds events into one row per session (FINAL makes a beacon
that arrived twice count once), the outer one folds sessions into variants.
Besides the nine counts of the API both return the sufficient statistics the analysis needs over
*exposed* sessions (with an impression), leaving out sessions exposed to more than one variant.
"""

from __future__ import annotations

import datetime as dt

from clickhouse_connect.driver.client import Client

from shared.rollup.results_sql import EVENTS_SOURCE, NEVER_EXPOSED_MINUTE, variant_totals_sql
from shared.rollup.totals import TOTAL_FIELDS, VariantRollup

Totals = dict[tuple[str, str], VariantRollup]

_ROLLUP_SUMS = ", ".join(f"sum({name}) AS total_{name}" for name in TOTAL_FIELDS)
ROLLUP_TOTALS_SQL = (
    f"SELECT experiment_key, variant_key, {_ROLLUP_SUMS} FROM abacus.rollup_cohort_totals "
    "WHERE experiment_key IN {keys:Array(String)} {minute_filter} GROUP BY experiment_key, variant_key"
)
# Per phase: how many later phases' cohorts had started by the minute (they start on whole minutes).
ROLLUP_PHASE_TOTALS_SQL = (
    "SELECT variant_key, arrayCount(b -> b <= cohort_minute, {phase_starts:Array(DateTime64(3, 'UTC'))}) AS phase, "
    f"{_ROLLUP_SUMS} FROM abacus.rollup_cohort_totals "
    "WHERE experiment_key = {key:String} {minute_filter} GROUP BY variant_key, phase"
)
ROLLUP_BUCKETS_SQL = (
    "SELECT variant_key, {bucket} AS bucket, sum(clean_exposed), sum(clean_converted) FROM abacus.rollup_cohort_totals "
    f"WHERE experiment_key = {{key:String}} AND cohort_minute > {NEVER_EXPOSED_MINUTE} {{minute_filter}} "
    "GROUP BY variant_key, bucket ORDER BY variant_key, bucket"
)
_ROLLUP_BUCKETS = {"day": "toStartOfDay(cohort_minute)", "hour": "toStartOfHour(cohort_minute)"}
_BUCKETS = {"day": "toStartOfDay(s_first_impression)", "hour": "toStartOfHour(s_first_impression)"}


def whole_minutes(start: dt.datetime | None, end: dt.datetime | None) -> bool:
    """Whether a window is made of whole UTC minutes (either bound may be open): the rollup's."""
    return all(bound is None or is_minute(bound) for bound in (start, end))


def is_minute(moment: dt.datetime) -> bool:
    """Whether an instant is the start of a UTC minute."""
    utc = moment.astimezone(dt.timezone.utc)
    return utc.second == 0 and utc.microsecond == 0


def _minute_filter(start: dt.datetime | None, end: dt.datetime | None) -> tuple[str, dict[str, object]]:
    """The rollup rows of the sessions first exposed in a window of whole UTC minutes (none: all)."""
    conditions = []
    parameters: dict[str, object] = {}
    if start is not None or end is not None:
        conditions.append(f"AND cohort_minute > {NEVER_EXPOSED_MINUTE}")
    if start is not None:
        conditions.append("AND cohort_minute >= toDateTime({start_s:Int64}, 'UTC')")
        parameters["start_s"] = int(start.timestamp())
    if end is not None:
        conditions.append("AND cohort_minute < toDateTime({end_s:Int64}, 'UTC')")
        parameters["end_s"] = int(end.timestamp())
    return " ".join(conditions), parameters


def fetch_rollup_totals(
    client: Client, keys: list[str], start: dt.datetime | None = None, end: dt.datetime | None = None
) -> Totals:
    """Totals from the rollup: all time, or the sessions first exposed in a window of whole UTC
    minutes. A sum over one row per variant and minute, whatever the number of events."""
    minute_filter, parameters = _minute_filter(start, end)
    sql = ROLLUP_TOTALS_SQL.replace("{minute_filter}", minute_filter)
    return _by_variant(client.query(sql, parameters={"keys": keys, **parameters}).result_rows)


def fetch_rollup_phase_totals(
    client: Client,
    key: str,
    phase_starts: list[dt.datetime],
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> list[tuple[str, int, VariantRollup]]:
    """(variant, phase index, totals) from the rollup, all time or in a window of whole UTC
    minutes, for phases whose cohorts start at ``phase_starts`` (whole minutes; sessions never
    exposed count in the first phase, as ``PHASE_INDEX`` puts them)."""
    minute_filter, parameters = _minute_filter(start, end)
    sql = ROLLUP_PHASE_TOTALS_SQL.replace("{minute_filter}", minute_filter)
    parameters |= {"key": key, "phase_starts": phase_starts}
    rows = client.query(sql, parameters=parameters).result_rows
    return [(variant_key, int(phase), VariantRollup(*numbers)) for variant_key, phase, *numbers in rows]


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


def fetch_rollup_buckets(
    client: Client, key: str, interval: str, start: dt.datetime | None = None, end: dt.datetime | None = None
) -> dict[str, list[tuple[dt.datetime, int, int]]]:
    """Per variant, from the rollup: (UTC day or hour, sessions first exposed in it that saw only
    this variant, how many of them converted), in time order; all of them, or those first exposed
    in a window of whole UTC minutes."""
    minute_filter, parameters = _minute_filter(start, end)
    sql = ROLLUP_BUCKETS_SQL.replace("{minute_filter}", minute_filter).replace("{bucket}", _ROLLUP_BUCKETS[interval])
    points: dict[str, list[tuple[dt.datetime, int, int]]] = {}
    for variant_key, bucket, exposed, converted in client.query(sql, parameters={"key": key, **parameters}).result_rows:
        moment = bucket if bucket.tzinfo is not None else bucket.replace(tzinfo=dt.timezone.utc)
        points.setdefault(variant_key, []).append((moment, exposed, converted))
    return points


def fetch_event_buckets(
    client: Client, key: str, interval: str, start: dt.datetime | None = None, end: dt.datetime | None = None
) -> dict[str, list[tuple[dt.datetime, int, int]]]:
    """As ``fetch_rollup_buckets``, computed from abacus.events;
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


def _by_variant(rows: list) -> Totals:
    rollups = {}
    for experiment_key, variant_key, *numbers in rows:
        rollups[(experiment_key, variant_key)] = VariantRollup(*numbers)
    return rollups
