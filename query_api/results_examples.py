"""OpenAPI examples of the results answers, computed by the real analysis from fixed numbers (so
the example is exactly what the API would answer for them, and cannot drift from the schema).

Built when the schema is (Litestar generates it on first request of /schema), never at import:
`document_statuses` calls the `openapi_example` a route names in its `opt`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import msgspec

from query_api.results_types import (
    ExperimentResults,
    PhaseSummary,
    ResultsFreshness,
    TimePoint,
    Timeseries,
    VariantCounts,
    VariantSeries,
)
from query_api.stats import ProportionStats, SampleMeanStats, VariantInput, analyze_experiment, rate_interval
from query_api.stats.phases import Phase, phases_summary

_STARTED = datetime(2026, 1, 5, 9, 30, tzinfo=timezone.utc)
# (variant, impressions, cta clicks, form starts, form submits, conversions, sessions, exposed,
#  converted, value total, value sum of squares)
_ROWS = (
    ("control", 14_220, 2_131, 905, 602, 741, 4_860, 4_812, 688, 42_117.5, 2_978_440.0),
    ("tiny_gang_social_proof", 14_105, 2_390, 1_012, 688, 823, 4_791, 4_755, 766, 46_204.0, 3_240_115.0),
)


def results_example() -> list[dict[str, Any]]:
    """One experiment, two variants, one phase, default metrics, all time from a current rollup."""
    phase = Phase(1, _STARTED, None, {"control": 50, "tiny_gang_social_proof": 50})
    inputs = [
        VariantInput(key, key == "control", 50, ProportionStats(exposed, converted), SampleMeanStats(exposed, total, squares))
        for key, _, _, _, _, _, _, exposed, converted, total, squares in _ROWS
    ]
    analysis = analyze_experiment(inputs)
    analysis["phase"] = 1
    body = ExperimentResults(
        experiment_key="homepage_hero_test",
        name="Homepage hero social proof",
        enabled=True,
        archived=False,
        version=3,
        from_=None,
        to=None,
        variants=[
            VariantCounts(key, imp, cta, starts, submits, conv, sessions, round(converted / exposed, 6), total)
            for key, imp, cta, starts, submits, conv, sessions, exposed, converted, total, _ in _ROWS
        ],
        analysis=analysis,
        phases=msgspec.convert(phases_summary([phase], [inputs]), list[PhaseSummary]),
        analysis_phase=1,
        freshness=ResultsFreshness("rollup", "rollup", behind=False, unfolded_events=0, behind_ms=0),
    )
    return [msgspec.to_builtins(body)]


def timeseries_example() -> dict[str, Any]:
    """Three days of cumulative exposed and converted sessions per variant."""
    series = []
    for key, daily in (
        ("control", ((1_602, 221), (1_655, 240), (1_555, 227))),
        ("tiny_gang_social_proof", ((1_570, 248), (1_630, 266), (1_555, 252))),
    ):
        exposed = converted = 0
        points = []
        for day, (new_exposed, new_converted) in enumerate(daily, start=5):
            exposed, converted = exposed + new_exposed, converted + new_converted
            rate, low, high = rate_interval(converted, exposed, 0.95)
            points.append(TimePoint(f"2026-01-{day:02d}T00:00:00+00:00", exposed, converted, rate, low, high))
        series.append(VariantSeries(key, key == "control", points))
    return msgspec.to_builtins(Timeseries("homepage_hero_test", "day", 0.95, series, 1))
