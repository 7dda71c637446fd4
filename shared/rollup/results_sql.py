"""The one SQL definition of the per-variant totals, over any source of event rows.

The results endpoint runs it over ``abacus.events`` when it cannot use the rollup (a window that
is not whole UTC minutes, or a rollup that is not current); a rollup rebuild runs it over
``abacus.rollup_events``. One text for both keeps the two ways of counting identical.

Windows select an *exposure cohort*: the sessions whose first impression in the experiment
(``s_first_impression``, over all its variants) falls in the window. Their events count whenever
they arrived. ``{cohort}`` is what the rows are grouped by besides (experiment, variant): a
constant for plain totals, the UTC minute of first exposure for the rollup's rows, an hour for
the hourly time series. Sessions never exposed have a NULL first impression: they count in
all-time totals (``unique_sessions``, conversions without an impression) and in no window.
"""

from __future__ import annotations

import functools

from shared.rollup.totals import ROLLUP_EVENT_TYPES, event_pairs

# Sessions (one row per experiment, variant and session, as below) into per-variant totals.
# {sign} weighs each row: 1 over events; over the roller's signed session summaries, -1 for a
# session's contribution before a step and +1 after it, so the sums are the step's difference.
_TOTALS_OVER_SESSIONS = """
SELECT
    experiment_key,
    variant_key,
    {cohort} AS cohort,
    sum({sign} * s_impressions) AS impressions,
    sum({sign} * s_cta_clicks) AS cta_clicks,
    sum({sign} * s_form_starts) AS form_starts,
    sum({sign} * s_form_submits) AS form_submits,
    sum({sign} * s_conversions) AS conversions,
    sum({sign}) AS unique_sessions,
    sum({sign} * (s_impressions > 0)) AS exposed_sessions,
    sum({sign} * (s_impressions > 0 AND s_conversions > 0)) AS exposed_converted,
    sum({sign} * s_value) AS value_total,
    sum({sign} * (s_impressions > 0 AND s_exposed_variants = 1)) AS clean_exposed,
    sum({sign} * (s_impressions > 0 AND s_conversions > 0 AND s_exposed_variants = 1)) AS clean_converted,
    sum({sign} * if(s_impressions > 0 AND s_exposed_variants = 1, s_value, 0)) AS clean_value_sum,
    sum({sign} * if(s_impressions > 0 AND s_exposed_variants = 1, s_value * s_value, 0)) AS clean_value_sum_squares,
    -- A session exposed to k variants appears in k rows: weighting each by 1/k makes the
    -- experiment-wide sum the number of distinct such sessions.
    sum({sign} * if(s_impressions > 0 AND s_exposed_variants > 1, 1 / s_exposed_variants, 0)) AS multi_variant_share,
{metric_sums}
FROM {sessions}
WHERE {cohort_filter}
GROUP BY experiment_key, variant_key, cohort
"""

_SESSIONS_OF_EVENTS = """(
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
)"""

_SUMMARY_COLUMNS = (
    ("sign", "Int8"),
    ("experiment_key", "String"),
    ("variant_key", "String"),
    ("cohort_minute", "UInt32"),  # seconds since 1970 (UTC); the table's DateTime column takes them as they are
    ("s_impressions", "Int64"),
    ("s_cta_clicks", "Int64"),
    ("s_form_starts", "Int64"),
    ("s_form_submits", "Int64"),
    ("s_conversions", "Int64"),
    ("s_value", "Float64"),
    ("s_exposed_variants", "UInt32"),
)
SUMMARY_WIDTH = len(_SUMMARY_COLUMNS)
# One Tuple value per row: the msgpack the roller writes is one array per summary.
SESSION_SUMMARY_STRUCTURE = "r Tuple(" + ", ".join(kind for _, kind in _SUMMARY_COLUMNS) + ")"
"""The roller's signed session summaries (``SessionState.summary``), as msgpack rows."""

EVENTS_SOURCE = "abacus.events FINAL WHERE experiment_key IN {keys:Array(String)}"
"""Raw events, deduplicated by FINAL (a beacon stored twice counts once)."""

ROLLUP_EVENTS_SOURCE = "abacus.rollup_events FINAL {shard_filter}"
"""What the roller has folded (a rebuild's snapshot of abacus.events), deduplicated the same way."""

COHORT_MINUTE = "ifNull(toStartOfMinute(s_first_impression), toDateTime(0, 'UTC'))"
"""The UTC minute of a session's first impression; 1970-01-01 00:00 for a session never exposed."""

NEVER_EXPOSED_MINUTE = "toDateTime(0, 'UTC')"


# The session columns counting each of ROLLUP_EVENT_TYPES.
_COUNT_COLUMN = {
    "cta_click": "s_cta_clicks",
    "form_start": "s_form_starts",
    "form_submit": "s_form_submits",
    "conversion": "s_conversions",
}
_CLEAN = "s_impressions > 0 AND s_exposed_variants = 1"


@functools.cache  # the same text for every query and every roller step
def _metric_sums() -> str:
    """The metric columns of ``TOTAL_FIELDS`` after ``multi_variant_share``, over clean sessions."""
    with_any = [
        f"sum({{sign}} * ({_CLEAN} AND {_COUNT_COLUMN[kind]} > 0)) AS clean_with_{kind}" for kind in ROLLUP_EVENT_TYPES[:3]
    ]
    sums = []
    for kind in ROLLUP_EVENT_TYPES:
        column = _COUNT_COLUMN[kind]
        sums.append(f"sum({{sign}} * if({_CLEAN}, {column}, 0)) AS clean_{kind}_sum")
        sums.append(f"sum({{sign}} * if({_CLEAN}, {column} * {column}, 0)) AS clean_{kind}_squares")
    crosses = [
        f"sum({{sign}} * if({_CLEAN}, {_COUNT_COLUMN[a]} * {_COUNT_COLUMN[b]}, 0)) AS clean_{a}_x_{b}" for a, b in event_pairs()
    ]
    return ",\n".join(f"    {line}" for line in (*with_any, *sums, *crosses))


def variant_totals_sql(source: str, cohort: str = "0", cohort_filter: str = "1") -> str:
    """One row per (experiment, variant, cohort) over event rows: the keys, the cohort, then
    ``TOTAL_FIELDS`` in order."""
    sessions = _SESSIONS_OF_EVENTS.replace("{source}", source)
    return _totals(sessions, "1", cohort, cohort_filter)


def summary_totals_sql(source: str) -> str:
    """The same totals over signed session summaries (``SESSION_SUMMARY_STRUCTURE`` rows read
    from ``source``), per cohort minute: what one roller step adds to the rollup."""
    columns = ", ".join(f"r.{i} AS {name}" for i, (name, _) in enumerate(_SUMMARY_COLUMNS, start=1))
    return _totals(f"(SELECT {columns} FROM {source})", "sign", "cohort_minute", "1")


def _totals(sessions: str, sign: str, cohort: str, cohort_filter: str) -> str:
    text = _TOTALS_OVER_SESSIONS.replace("{metric_sums}", _metric_sums())
    text = text.replace("{sessions}", sessions).replace("{sign}", sign)
    return text.replace("{cohort_filter}", cohort_filter).replace("{cohort}", cohort)


def shard_condition(shard: int, shards: int, column: str = "experiment_key") -> str:
    """SQL true for the experiments a roller shard owns (``shared.rollup.protocol.shard_of``)."""
    return "1" if shards == 1 else f"halfMD5({column}) % {int(shards)} = {int(shard)}"
