"""The results answer as CSV: one row per (experiment, variant), the nine counts of the API and
the conversion-rate analysis beside them. Reads the answer as plain data (``msgspec.to_builtins``),
so it formats the typed structs and the dicts alike."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

import msgspec

from query_api.results_types import VariantCounts

EXPERIMENT_COLUMNS = ["experiment_key", "name", "enabled", "archived", "version", "from", "to"]
# The nine counts, named and ordered by the answer's own struct: one definition, not a copy.
COUNT_COLUMNS = list(VariantCounts.__struct_fields__)
ANALYSIS_COLUMNS = [
    "is_control",
    "exposed_sessions",
    "exposed_conversions",
    "rate_ci_low",
    "rate_ci_high",
    "absolute_lift",
    "absolute_lift_ci_low",
    "absolute_lift_ci_high",
    "relative_lift",
    "p_value",
    "significant",
    "chance_to_beat_control",
    "status",
    "srm_p_value",
    "srm_flagged",
    "status_code",
    "analysis_phase",
]
COLUMNS = EXPERIMENT_COLUMNS + COUNT_COLUMNS + ANALYSIS_COLUMNS


def results_csv(results: Iterable[object]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180
    writer.writerow(COLUMNS)
    for experiment in msgspec.to_builtins(list(results)):
        analysis = experiment.get("analysis") or {}
        by_variant = {v.get("variant_key"): v for v in analysis.get("variants") or []}
        srm = analysis.get("srm") or {}
        for variant in experiment.get("variants") or []:
            analysed = by_variant.get(variant.get("variant_key"), {})
            row = [experiment.get(c) for c in EXPERIMENT_COLUMNS] + [variant.get(c) for c in COUNT_COLUMNS]
            row += _analysis_cells(analysed, srm, experiment.get("analysis_phase"))
            writer.writerow(["" if cell is None else _cell(cell) for cell in row])
    return buffer.getvalue()


def _analysis_cells(variant: dict, srm: dict, analysis_phase: object) -> list[object]:
    interval = variant.get("conversion_rate_interval") or {}
    rate = ((variant.get("comparison") or {}).get("conversion_rate")) or {}
    absolute = rate.get("absolute_lift") or {}
    relative = rate.get("relative_lift") or {}
    bayesian = rate.get("bayesian") or {}
    return [
        variant.get("is_control"),
        variant.get("sessions"),
        variant.get("conversions"),
        interval.get("low"),
        interval.get("high"),
        absolute.get("estimate"),
        absolute.get("ci_low"),
        absolute.get("ci_high"),
        relative.get("estimate"),
        rate.get("p_value"),
        rate.get("significant"),
        bayesian.get("chance_to_beat_control"),
        variant.get("status"),
        srm.get("p_value"),
        srm.get("flagged"),
        variant.get("status_code"),
        analysis_phase,
    ]


def _cell(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        # A spreadsheet would run a cell that starts like a formula (CSV injection).
        return "'" + value
    return value
