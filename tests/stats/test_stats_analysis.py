"""analyze_experiment / rate_interval: output contract, statuses, wiring, degenerate inputs."""

import json
import math

import numpy as np
import pytest

from query_api.stats import (
    ProportionStats,
    SampleMeanStats,
    VariantInput,
    analyze_experiment,
    rate_interval,
)
from query_api.stats.frequentist import holm_adjust, two_proportion_z_test, welch_t_test, wilson_interval
from query_api.stats.sequential import sequential_test


def variant(key, n, converted, value_sum=None, value_sum_squares=None, *, control=False, allocation=50):
    value_sum = converted * 20.0 if value_sum is None else value_sum
    value_sum_squares = converted * 900.0 if value_sum_squares is None else value_sum_squares
    return VariantInput(key, control, allocation, ProportionStats(n, converted), SampleMeanStats(n, value_sum, value_sum_squares))


def dumps(result):
    return json.dumps(result, allow_nan=False)  # raises on NaN / inf / non-JSON types


STATUSES = {
    "control",
    "not enough data",
    "significant win",
    "significant loss",
    "no detectable difference",
    "not analyzed",
    "unreliable: sample ratio mismatch",
    "guardrail regression",
}
STATUS_CODES = {
    "control",
    "not_analyzed",
    "unreliable_srm",
    "not_enough_data",
    "guardrail_regression",
    "win",
    "loss",
    "no_difference",
}
VARIANT_KEYS = {
    "variant_key",
    "is_control",
    "allocation",
    "sessions",
    "conversions",
    "conversion_rate",
    "conversion_rate_interval",
    "value_sum",
    "value_per_session",
    "status",
    "status_message",
    "comparison",
    "status_code",
    "minimum_detectable_effect",
    "metrics",
    "metric_comparisons",
}
BLOCK_KEYS = {
    "control",
    "variant",
    "absolute_lift",
    "relative_lift",
    "statistic",
    "df",
    "p_value",
    "p_value_raw",
    "p_value_adjusted",
    "significant",
    "message",
    "interval_confidence",
    "interval_adjusted",
}


def rows_metrics_empty(result):
    rows = result["variants"]
    return all(r["metrics"] == {} for r in rows) and rows[0]["metric_comparisons"] is None and rows[1]["metric_comparisons"] == {}


def test_output_shape_and_values_for_a_simple_experiment():
    control, treatment = variant("a", 10000, 1000, control=True), variant("b", 10000, 1100)
    result = analyze_experiment([control, treatment], multi_variant_sessions=7)
    dumps(result)
    assert set(result) == {
        "confidence",
        "sequential",
        "sequential_planned_sessions",
        "control_variant_key",
        "multiple_comparison_correction",
        "thresholds",
        "methods",
        "messages",
        "srm",
        "multi_variant_sessions",
        "variants",
        "sequential_tuning",
        "primary_metric",
        "guardrail_metrics",
        "rate_definitions",
        "stratified",
    }
    assert result["primary_metric"] == "conversion" and result["guardrail_metrics"] == ["value_per_session"]
    assert result["stratified"] is False and rows_metrics_empty(result)
    assert result["control_variant_key"] == "a" and result["multiple_comparison_correction"] is None
    assert result["multi_variant_sessions"]["count"] == 7 and "excluded" in result["multi_variant_sessions"]["message"]
    rows = result["variants"]
    assert [set(r) for r in rows] == [VARIANT_KEYS, VARIANT_KEYS]
    assert rows[0]["status"] == "control" and rows[0]["comparison"] is None
    conversion = rows[1]["comparison"]["conversion_rate"]
    assert set(conversion) == BLOCK_KEYS | {"bayesian"}
    assert set(rows[1]["comparison"]["value_per_session"]) == BLOCK_KEYS
    ref = two_proportion_z_test(control.conversions, treatment.conversions, 0.95)
    assert conversion["p_value"] == ref.p_value == conversion["p_value_raw"]
    assert conversion["absolute_lift"] == {
        "estimate": ref.absolute.estimate,
        "ci_low": ref.absolute.ci_low,
        "ci_high": ref.absolute.ci_high,
    }
    assert conversion["relative_lift"]["estimate"] == pytest.approx(0.1)
    assert conversion["significant"] is True and rows[1]["status"] == "significant win"
    assert 0.98 < conversion["bayesian"]["chance_to_beat_control"] < 1
    value = rows[1]["comparison"]["value_per_session"]
    ref_value = welch_t_test(control.value, treatment.value, 0.95)
    assert value["p_value"] == ref_value.p_value and value["df"] == ref_value.df
    assert rows[1]["conversion_rate_interval"]["low"] == wilson_interval(1100, 10000, 0.95)[1]


def test_statuses():
    rows = analyze_experiment(
        [
            variant("control", 20000, 2000, control=True, allocation=25),
            variant("win", 20000, 2300, allocation=25),
            variant("loss", 20000, 1700, allocation=25),
            variant("same", 20000, 2010, allocation=25),
        ]
    )["variants"]
    assert [r["status"] for r in rows] == ["control", "significant win", "significant loss", "no detectable difference"]
    few = analyze_experiment([variant("a", 99, 50, control=True, allocation=2), variant("b", 5000, 900, allocation=98)])[
        "variants"
    ][1]
    assert few["status"] == "not enough data" and "99 exposed sessions" in few["status_message"]
    few_conversions = analyze_experiment([variant("a", 5000, 4, control=True), variant("b", 5000, 40)])["variants"][1]
    assert few_conversions["status"] == "not enough data"
    # the numbers are still reported when they are defined
    assert few_conversions["comparison"]["conversion_rate"]["p_value"] < 1e-5


def test_holm_correction_with_two_or_more_treatments():
    variants = [variant("a", 8000, 800, control=True), variant("b", 8000, 882), variant("c", 8000, 878)]
    result = analyze_experiment(variants)
    assert result["multiple_comparison_correction"] == "holm"
    blocks = [r["comparison"]["conversion_rate"] for r in result["variants"][1:]]
    raw = [two_proportion_z_test(variants[0].conversions, v.conversions, 0.95).p_value for v in variants[1:]]
    assert [b["p_value_raw"] for b in blocks] == raw
    assert [b["p_value_adjusted"] for b in blocks] == holm_adjust(raw)
    assert [b["p_value"] for b in blocks] == holm_adjust(raw)
    assert [b["significant"] for b in blocks] == [p < 0.05 for p in holm_adjust(raw)]
    # raw p-values of 0.035 and 0.044: each would be significant alone, neither after Holm
    assert all(p < 0.05 for p in raw) and not any(b["significant"] for b in blocks)
    assert all(r["status"] == "no detectable difference" for r in result["variants"][1:])
    value_blocks = [r["comparison"]["value_per_session"] for r in result["variants"][1:]]
    assert [b["p_value_adjusted"] for b in value_blocks] == holm_adjust([b["p_value_raw"] for b in value_blocks])


def test_sequential_mode_uses_the_confidence_sequence():
    a, b = variant("a", 6000, 600, control=True), variant("b", 6000, 700)
    fixed = analyze_experiment([a, b])["variants"][1]["comparison"]["conversion_rate"]
    result = analyze_experiment([a, b], sequential=True, sequential_planned_sessions=20000)
    assert result["sequential"] is True and result["sequential_planned_sessions"] == 20000
    block = result["variants"][1]["comparison"]["conversion_rate"]
    ref = sequential_test(a.conversions, b.conversions, 0.95, 20000)
    assert block["p_value"] == ref.p_value and block["absolute_lift"]["ci_low"] == ref.absolute.ci_low
    assert block["p_value"] > fixed["p_value"]
    value = result["variants"][1]["comparison"]["value_per_session"]
    assert value["p_value"] == sequential_test(a.value, b.value, 0.95, 20000).p_value


@pytest.mark.parametrize("confidence", [0.5, 0.8, 0.9, 0.951, 0.99, 0.999])
def test_any_confidence_in_range(confidence):
    result = analyze_experiment([variant("a", 1000, 100, control=True), variant("b", 1000, 130)], confidence=confidence)
    assert result["confidence"] == confidence
    block = result["variants"][1]["comparison"]["conversion_rate"]
    assert block["interval_confidence"] == confidence
    ref = two_proportion_z_test(ProportionStats(1000, 100), ProportionStats(1000, 130), confidence)
    assert block["absolute_lift"]["ci_low"] == ref.absolute.ci_low
    assert block["significant"] == (block["p_value"] < 1 - confidence)


@pytest.mark.parametrize("confidence", [0.49, 0.9991, 1.0, 0.0, -0.95, 95, math.nan, "0.95", None, True])
def test_bad_confidence_raises_value_error(confidence):
    with pytest.raises(ValueError):
        analyze_experiment([variant("a", 10, 1, control=True)], confidence=confidence)
    with pytest.raises(ValueError):
        rate_interval(1, 10, confidence)


@pytest.mark.parametrize("planned", [0, -5, math.inf, math.nan])
def test_bad_planned_sessions_raise_value_error(planned):
    with pytest.raises(ValueError):
        analyze_experiment([variant("a", 10, 1, control=True)], sequential=True, sequential_planned_sessions=planned)


DEGENERATE = {
    "no variants": [],
    "only a control": [variant("a", 500, 20, control=True)],
    "zero sessions everywhere": [variant("a", 0, 0, 0.0, 0.0, control=True), variant("b", 0, 0, 0.0, 0.0)],
    "zero conversions everywhere": [variant("a", 5000, 0, 0.0, 0.0, control=True), variant("b", 5000, 0, 0.0, 0.0)],
    "everyone converts": [variant("a", 300, 300, control=True), variant("b", 300, 300)],
    "zero value variance": [variant("a", 5000, 100, 0.0, 0.0, control=True), variant("b", 5000, 120, 0.0, 0.0)],
    "constant values": [variant("a", 5000, 5000, 5000.0, 5000.0, control=True), variant("b", 5000, 5000, 5000.0, 5000.0)],
    "missing control": [variant("a", 1000, 100), variant("b", 1000, 120)],
    "two controls": [variant("a", 1000, 100, control=True), variant("b", 1000, 120, control=True), variant("c", 900, 90)],
    "variant without data": [variant("a", 1000, 100, control=True), variant("b", 0, 0, 0.0, 0.0)],
    "control without data": [variant("a", 0, 0, 0.0, 0.0, control=True), variant("b", 1000, 80)],
    "one session each": [variant("a", 1, 1, 5.0, 25.0, control=True), variant("b", 1, 0, 0.0, 0.0)],
    "control rate 0": [variant("a", 4000, 0, 0.0, 0.0, control=True), variant("b", 4000, 12)],
    "rates 0 vs 100%": [variant("a", 400, 0, 0.0, 0.0, control=True), variant("b", 400, 400)],
    "converted > n": [variant("a", 1000, 100, control=True), variant("b", 10, 11)],
    "negative sessions": [variant("a", 1000, 100, control=True), variant("b", -3, 0, 0.0, 0.0)],
    "nan value": [variant("a", 1000, 100, control=True), variant("b", 1000, 100, math.nan, math.inf)],
    "invalid control": [variant("a", 5, 9, control=True), variant("b", 1000, 100)],
    "zero allocation with stray sessions": [
        variant("a", 1000, 100, control=True),
        variant("b", 1000, 110),
        variant("c", 7, 1, allocation=0),
    ],
    "huge experiment": [variant("a", 50_000_000, 2_500_000, control=True), variant("b", 50_000_000, 2_510_000)],
    "numpy integers": [
        VariantInput(
            "a",
            True,
            np.int64(50),
            ProportionStats(np.int64(1000), np.int64(100)),
            SampleMeanStats(np.int64(1000), np.float64(2000.0), np.float64(90000.0)),
        ),
        VariantInput(
            "b",
            False,
            np.int64(50),
            ProportionStats(np.int64(1000), np.int64(130)),
            SampleMeanStats(np.int64(1000), np.float64(2600.0), np.float64(120000.0)),
        ),
    ],
}


def _walk_numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_numbers(v)
    elif isinstance(obj, float):
        yield obj


@pytest.mark.parametrize("sequential", [False, True])
@pytest.mark.parametrize("name", list(DEGENERATE))
def test_degenerate_inputs_never_raise_and_stay_json(name, sequential):
    result = analyze_experiment(DEGENERATE[name], sequential=sequential, multi_variant_sessions=3)
    dumps(result)
    assert all(math.isfinite(x) for x in _walk_numbers(result))
    assert len(result["variants"]) == len(DEGENERATE[name])
    for row in result["variants"]:
        assert row["status"] in STATUSES
        assert row["status_message"]
        for block in (row["comparison"] or {}).values():
            # every missing test result comes with an explanation
            if block["p_value"] is None:
                assert block["message"]


def test_degenerate_messages():
    def rows(name):
        return analyze_experiment(DEGENERATE[name])["variants"]

    assert rows("zero conversions everywhere")[1]["status"] == "not enough data"
    block = rows("zero conversions everywhere")[1]["comparison"]["conversion_rate"]
    assert block["p_value"] is None and "converted" in block["message"]
    assert block["bayesian"]["chance_to_beat_control"] == pytest.approx(0.5)
    value = rows("zero value variance")[1]["comparison"]["value_per_session"]
    assert value["p_value"] is None and "zero variance" in value["message"]
    assert value["absolute_lift"]["estimate"] == 0.0
    missing = analyze_experiment(DEGENERATE["missing control"])
    assert missing["control_variant_key"] is None and "No control" in missing["messages"][0]
    assert all(r["status"] == "not analyzed" and r["comparison"] is None for r in missing["variants"])
    assert "2 variants are marked as control" in analyze_experiment(DEGENERATE["two controls"])["messages"][0]
    empty = rows("variant without data")[1]
    # all sessions in one arm of a 50/50 split: the SRM gate speaks first
    assert empty["status"] == "unreliable: sample ratio mismatch" and empty["conversion_rate"] is None
    assert empty["comparison"]["conversion_rate"]["control"] == 0.1 and empty["comparison"]["conversion_rate"]["variant"] is None
    invalid = rows("converted > n")[1]
    assert invalid["status"] == "not analyzed" and "impossible" in invalid["status_message"]
    assert rows("nan value")[1]["value_sum"] is None
    assert analyze_experiment(DEGENERATE["invalid control"])["control_variant_key"] == "a"
    assert rows("invalid control")[1]["status"] == "not analyzed"
    relative = rows("control rate 0")[1]["comparison"]["conversion_rate"]
    assert relative["relative_lift"]["estimate"] is None and "relative lift is undefined" in relative["message"]
    assert rows("huge experiment")[1]["status"] == "significant win"
    assert "Fewer than two" in analyze_experiment(DEGENERATE["only a control"])["srm"]["message"]
    stray = analyze_experiment(DEGENERATE["zero allocation with stray sessions"])
    assert stray["srm"]["excluded_variants"] == ["c"] and "7 exposed session(s)" in stray["srm"]["message"]


def test_srm_and_multi_variant_messages_reach_the_top_level():
    result = analyze_experiment([variant("a", 10000, 1000, control=True), variant("b", 9000, 900)], multi_variant_sessions=800)
    assert result["srm"]["flagged"]
    assert any("Sample ratio mismatch" in m for m in result["messages"])
    assert any("800 sessions saw more than one variant" in m for m in result["messages"])
    assert result["multi_variant_sessions"]["flagged"] and result["multi_variant_sessions"]["share"] == 800 / 19800


def test_rate_interval():
    assert rate_interval(0, 0, 0.95) == (None, None, None)
    assert rate_interval(None, None, 0.95) == (None, None, None)
    assert rate_interval(3, 100, 0.99) == wilson_interval(3, 100, 0.99)
    rate, low, high = rate_interval(0, 20)
    assert rate == 0.0 and low == 0.0 and 0 < high < 0.2
    assert rate_interval(25, 20, 0.9)[0] == 1.0  # clamped, not an error


@pytest.mark.parametrize("junk", [None, -5, math.nan, math.inf, "x"])
def test_multi_variant_sessions_junk_counts_as_zero(junk):
    result = analyze_experiment([variant("a", 100, 10, control=True)], multi_variant_sessions=junk)
    assert result["multi_variant_sessions"] == {
        "count": 0,
        "share": 0.0,
        "threshold": 0.01,
        "flagged": False,
        "message": "No session saw more than one variant.",
    }


def test_package_is_stdlib_only():
    import ast
    import pathlib
    import sys

    import query_api.stats

    allowed = set(sys.stdlib_module_names) | {"shared"}
    for path in pathlib.Path(query_api.stats.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            assert all(name.split(".")[0] in allowed for name in names), (path.name, names)
