"""Experiment-level analysis: turns per-variant aggregates into the JSON `analysis` of the results API.

The primary metric (default: the conversion rate; a definition may name another) decides each
variant's verdict (`status_code`, with the `status` label and `status_message` sentence; see
statuses.py). Guardrail metrics (default: the conversion value per exposed session) are reported
alongside: a significant drop of one makes the verdict "guardrail regression". The comparisons
themselves are built in comparison_blocks.py, the answer's shape is answer_types.py.

Nothing here raises for odd data (no sessions, no conversions, zero variance, missing control, bad
counts): the affected numbers become None and a `message` says why. The only exceptions are
ValueErrors for arguments the caller chose: `confidence` outside [MIN_CONFIDENCE, MAX_CONFIDENCE] and
non-positive planned sizes.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, NamedTuple, Sequence, cast

from . import analysis_inputs as checks
from .analysis_text import RATE_DEFINITIONS, methods
from .answer_types import Analysis, MinimumDetectableEffect, MultiVariantSessions, SrmCheck, VariantAnalysis
from .comparison_blocks import Blocks, apply_significance, compare, holm_interval_levels, mde
from .frequentist import wilson_interval
from .metric_tests import MetricInputs, block_of, metric_label, metric_value
from .models import VariantInput, validate_confidence
from .planning import DEFAULT_POWER
from .sequential import DEFAULT_PLANNED_SESSIONS
from .srm import sample_ratio_mismatch
from .statuses import MIN_CONVERSIONS, MIN_SESSIONS, STATUS_LABELS, StatusCode, verdict

# Sessions seen in several variants are dropped upstream; above this share of all exposed sessions
# that is a sign of broken (non-sticky) assignment: a warning in `messages` and `flagged` set.
MULTI_VARIANT_WARNING_SHARE = 0.01

__all__ = ["MULTI_VARIANT_WARNING_SHARE", "analyze_experiment", "holm_interval_levels", "rate_interval"]


def rate_interval(
    converted: int | None, n: int | None, confidence: float = 0.95
) -> tuple[float | None, float | None, float | None]:
    """(rate, low, high) with the Wilson score interval, for time series points.

    Wilson rather than Wald because time series buckets are often small: it stays inside [0, 1] and
    gives a sensible interval at 0 or n conversions. Returns (None, None, None) when there is no
    session (n is None or <= 0); `converted` is clamped into [0, n]. Raises ValueError for a
    confidence outside [MIN_CONFIDENCE, MAX_CONFIDENCE].
    """
    confidence = validate_confidence(confidence)
    if n is None or n <= 0:
        return None, None, None
    converted = min(max(converted or 0, 0), n)
    return wilson_interval(converted, n, confidence)


def analyze_experiment(
    variants: Sequence[VariantInput],
    *,
    confidence: float = 0.95,
    sequential: bool = False,
    multi_variant_sessions: int = 0,
    sequential_planned_sessions: float | None = None,
    planned_sessions: float | None = None,
    target_mde: float | None = None,
    power: float = DEFAULT_POWER,
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
    primary_metric: str = "conversion",
    guardrail_metrics: Sequence[str] = ("value_per_session",),
    strata: Mapping[str, Sequence[VariantInput]] | None = None,
    srm_result: SrmCheck | None = None,
) -> Analysis:
    """Analyze one experiment; returns a JSON-ready dict (no NaN or infinity anywhere).

    The shape is `answer_types.Analysis` (None wherever a number is undefined, with a `message`
    saying why).

    `p_value` is the one `significant` uses: Holm-adjusted when there are 2+ treatments (then equal
    to `p_value_adjusted`), else raw. `interval_confidence` is the level of the intervals shown:
    `confidence`, or Holm's step-down level; `significant` is true exactly when that interval excludes 0.

    Sequential tuning (where the always-valid interval is narrowest; it is valid at every size), first
    that is given: `sequential_planned_sessions` (control + one treatment, as gbstats'
    `sequential_tuning_parameter`), `planned_sessions` (the whole experiment, split by allocation),
    `target_mde` (relative lift; sessions from the plan at the control's observed rate, `power`),
    else DEFAULT_PLANNED_SESSIONS.

    Metrics: `conversion` (the `conversion_rate` block) and `value_per_session` always; `metrics`
    adds others, {metric name: {variant_key: ProportionStats | SampleMeanStats | RatioStats}}, each
    compared as `metric_tests.compare_metric` does, Holm-adjusted like the two above, under
    `comparison.metrics` and `variants[].metrics`. `primary_metric` decides the verdict,
    `guardrail_metrics` can turn it into `guardrail_regression` (names as in a definition:
    "conversion", "value_per_session", an event type, "numerator/denominator").

    `strata` ({variant_key: [VariantInput per phase]}; the per-phase values of `metrics` are then
    lists in the same order) makes every comparison the stratified all-phases one, fixed-horizon
    only; `variants` are then the pooled totals (for the rates shown and the MDE). `srm_result`
    replaces the SRM check of `variants` (e.g. the per-phase checks, which pooled totals cannot give).
    """
    confidence = validate_confidence(confidence)
    checks.check_arguments(sequential_planned_sessions, planned_sessions, target_mde, power, strata is not None, sequential)
    inputs = MetricInputs(dict(metrics or {}), strata)
    alpha = 1.0 - confidence
    variants = list(variants)
    messages: list[str] = []

    problems = {id(v): checks.input_problem(v) for v in variants}
    control, control_problem = checks.find_control(variants)
    if control_problem:
        messages.append(control_problem)
    elif control is not None and problems[id(control)]:
        messages.append(f"The control has invalid data ({problems[id(control)]}); nothing can be compared.")
    keys = [v.variant_key for v in variants]
    if len(set(keys)) != len(keys):
        messages.append("Some variant keys appear more than once; each row is analyzed separately.")

    srm = srm_result if srm_result is not None else sample_ratio_mismatch([v for v in variants if not problems[id(v)]])
    if srm["flagged"]:
        messages.append(f"{srm['message']} Every verdict is marked unreliable until this is fixed.")

    treatments = [v for v in variants if v is not control and not v.is_control]
    can_compare = control is not None and not problems[id(control)]
    compared = [v for v in treatments if can_compare and not problems[id(v)]]
    tuning = checks.sequential_tuning(
        control, compared, variants, sequential, sequential_planned_sessions, planned_sessions, target_mde, alpha, power
    )
    planned_for = tuning["planned_sessions_per_comparison"]
    comparisons: dict[int, Blocks] = {
        id(v): compare(control, v, confidence, sequential, planned_for.get(v.variant_key, DEFAULT_PLANNED_SESSIONS), inputs)  # type: ignore[arg-type]
        for v in compared
    }
    correction = "holm" if len(treatments) >= 2 else None
    for metric in ("conversion_rate", "value_per_session", *inputs.metrics):
        pairs = [(v, block_of(comparisons[id(v)], metric)) for v in compared]
        apply_significance(pairs, metric, control, confidence, correction, sequential, planned_for, inputs)  # type: ignore[arg-type]
    guardrails = [g for g in guardrail_metrics if g != primary_metric]

    context = _RowContext(control, control_problem, confidence, alpha, len(treatments), sequential, planned_for, power)
    rows = [
        _variant_row(v, comparisons.get(id(v)), problems[id(v)], context, inputs, primary_metric, guardrails, srm["flagged"])
        for v in variants
    ]
    multi = _multi_variant_sessions(checks.count(multi_variant_sessions), variants, problems)
    if multi["flagged"]:
        messages.append(
            f"{multi['count']} sessions saw more than one variant ({multi['share']:.1%} of all, above the "
            f"{MULTI_VARIANT_WARNING_SHARE:.0%} threshold); check that assignment is sticky."
        )
    result: Analysis = {
        "confidence": confidence,
        "sequential": bool(sequential),
        "sequential_planned_sessions": (next(iter(planned_for.values()), None) if sequential else None),
        "sequential_tuning": tuning if sequential else None,
        "control_variant_key": control.variant_key if control is not None else None,
        "multiple_comparison_correction": correction,
        "primary_metric": primary_metric,
        "guardrail_metrics": guardrails,
        "stratified": strata is not None,
        "thresholds": {
            "min_sessions": MIN_SESSIONS,
            "min_conversions": MIN_CONVERSIONS,
            "srm_p_value": srm["threshold"],
            "multi_variant_share": MULTI_VARIANT_WARNING_SHARE,
            "mde_power": power,
        },
        "methods": methods(sequential),
        "rate_definitions": RATE_DEFINITIONS,
        "messages": messages,
        "srm": srm,
        "multi_variant_sessions": multi,
        "variants": rows,
    }
    return cast(Analysis, _json_safe(result))


# --- helpers ---------------------------------------------------------------------------------------


class _RowContext(NamedTuple):
    """What every variant row of one analysis shares."""

    control: VariantInput | None
    control_problem: str | None
    confidence: float
    alpha: float
    treatments: int
    sequential: bool
    planned_for: dict[str, float]
    power: float


def _multi_variant_sessions(multi: int, variants: list[VariantInput], problems: dict[int, str | None]) -> MultiVariantSessions:
    total_sessions = sum(v.sessions for v in variants if not problems[id(v)])
    share = multi / (total_sessions + multi) if total_sessions + multi else 0.0
    return {
        "count": multi,
        "share": share,
        "threshold": MULTI_VARIANT_WARNING_SHARE,
        "flagged": share > MULTI_VARIANT_WARNING_SHARE,
        "message": (
            f"{multi} session(s) saw more than one variant and were excluded from every variant."
            if multi
            else "No session saw more than one variant."
        ),
    }


def _status(
    v: VariantInput,
    comparison: Blocks | None,
    problem: str | None,
    context: _RowContext,
    inputs: MetricInputs,
    primary_metric: str,
    guardrails: list[str],
    srm_flagged: bool,
) -> tuple[StatusCode, str]:
    """The variant's verdict and the sentence explaining it."""
    control = context.control
    if v is control:
        return StatusCode.CONTROL, "Baseline that every other variant is compared with."
    if problem:
        return StatusCode.NOT_ANALYZED, f"Invalid data: {problem}."
    if comparison is None or control is None:
        return StatusCode.NOT_ANALYZED, context.control_problem or "The control's data is invalid, so nothing can be compared."
    return verdict(
        checks.verdict_counts(control, primary_metric, inputs),
        checks.verdict_counts(v, primary_metric, inputs),
        block_of(comparison, primary_metric),
        {name: block_of(comparison, name) for name in guardrails},
        srm_flagged,
        metric_label=metric_label(primary_metric),
    )


def _variant_row(
    v: VariantInput,
    comparison: Blocks | None,
    problem: str | None,
    context: _RowContext,
    inputs: MetricInputs,
    primary_metric: str,
    guardrails: list[str],
    srm_flagged: bool,
) -> VariantAnalysis:
    code, status_message = _status(v, comparison, problem, context, inputs, primary_metric, guardrails, srm_flagged)
    effect: MinimumDetectableEffect | None = mde(
        context.control, v, comparison, context.alpha, context.treatments, context.sequential, context.planned_for, context.power
    )
    extra_blocks = comparison.pop("metrics") if comparison is not None else None
    if problem:
        rate = low = high = value_mean = None
    else:
        rate, low, high = rate_interval(v.conversions.converted, v.sessions, context.confidence)
        value_mean = v.value.mean if v.sessions > 0 else None
    return {
        "variant_key": v.variant_key,
        "is_control": v.is_control,
        "allocation": v.allocation,
        "sessions": v.sessions,
        "conversions": v.conversions.converted,
        "conversion_rate": rate,
        "conversion_rate_interval": {"low": low, "high": high},
        "value_sum": v.value.sum,
        "value_per_session": value_mean,
        "status_code": code.value,
        "status": STATUS_LABELS[code],
        "status_message": status_message,
        "minimum_detectable_effect": effect,
        "comparison": comparison,  # type: ignore[typeddict-item]  # the two built-in blocks once "metrics" is popped
        "metrics": {name: metric_value(inputs.value_stats(name, v.variant_key)) for name in inputs.metrics},
        "metric_comparisons": extra_blocks,
    }


def _json_safe(obj: Any) -> Any:
    """Last line of defence for the JSON contract: plain Python types only, non-finite floats become None.

    Also turns numpy-style scalars that a driver may hand in (and that we echo or compare) into plain
    Python values; they all have .item(), so numpy need not be imported.
    """
    if not isinstance(obj, (bool, int, float, str, dict, list, tuple)) and hasattr(obj, "item"):
        obj = obj.item()
    if isinstance(obj, (bool, str)) or obj is None:
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(x) for x in obj]
    return obj
