"""Experiment-level analysis: turns per-variant aggregates into the JSON `analysis` of the results API.

The primary metric (default: the conversion rate; a definition may name another) decides each
variant's verdict (`status_code`, with the `status` label and `status_message` sentence; see
statuses.py). Guardrail metrics (default: the conversion value per exposed session) are reported
alongside: a significant drop of one makes the verdict "guardrail regression".

Every `significant` is exactly "the interval shown excludes 0": with 2+ treatments the intervals are
Holm-adjusted (`holm_interval_levels`) and the p-values Holm-adjusted, and the two agree.

Nothing here raises for odd data (no sessions, no conversions, zero variance, missing control, bad
counts): the affected numbers become None and a `message` says why. The only exceptions are
ValueErrors for arguments the caller chose: `confidence` outside [MIN_CONFIDENCE, MAX_CONFIDENCE] and
non-positive planned sizes.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence

from .bayesian import BayesianResult, beta_binomial_comparison
from .distributions import normal_ppf
from .frequentist import Estimate, LiftTest, holm_adjust, wilson_interval
from .metric_tests import MetricInputs, block_of, compare_metric, metric_label, metric_value
from .models import ProportionStats, VariantInput, validate_confidence
from .planning import DEFAULT_POWER, comparison_alpha, minimum_detectable_effect, sessions_per_variant
from .sequential import DEFAULT_PLANNED_SESSIONS, mixture_rho, sequential_half_width
from .srm import sample_ratio_mismatch
from .statuses import MIN_CONVERSIONS, MIN_SESSIONS, STATUS_LABELS, StatusCode, verdict

# Sessions seen in several variants are dropped upstream; above this share of all exposed sessions
# that is a sign of broken (non-sticky) assignment: a warning in `messages` and `flagged` set.
MULTI_VARIANT_WARNING_SHARE = 0.01

# Kept for callers of the old module-level names.
STATUS_CONTROL = STATUS_LABELS[StatusCode.CONTROL]
STATUS_NOT_ENOUGH_DATA = STATUS_LABELS[StatusCode.NOT_ENOUGH_DATA]
STATUS_WIN = STATUS_LABELS[StatusCode.WIN]
STATUS_LOSS = STATUS_LABELS[StatusCode.LOSS]
STATUS_NO_DIFFERENCE = STATUS_LABELS[StatusCode.NO_DIFFERENCE]
STATUS_NOT_ANALYZED = STATUS_LABELS[StatusCode.NOT_ANALYZED]
STATUS_UNRELIABLE_SRM = STATUS_LABELS[StatusCode.UNRELIABLE_SRM]

METHODS = {
    "conversion_rate": (
        "Pooled two-proportion z-test; absolute and relative lift intervals are the score intervals that "
        "invert it (Mee / Miettinen-Nurminen), so an interval excludes 0 exactly when p < alpha."
    ),
    "conversion_rate_sequential": (
        "Always-valid asymptotic confidence sequence (Waudby-Smith et al. 2023, normal mixture, as in "
        "GrowthBook's sequential testing) with the unpooled variance; p-value = 1 / mixture e-value; "
        "relative lift by Fieller's interval with the same boundary."
    ),
    "bayesian": (
        "Beta-binomial with a uniform Beta(1, 1) prior: chance to beat control and expected loss (exact "
        "sums, Edgeworth expansion for very large counts); credible interval of the absolute lift from "
        "the posteriors' difference (Cornish-Fisher expansion)."
    ),
    "value_per_session": (
        "Welch t-test with Welch-Satterthwaite degrees of freedom, its t interval, and Fieller's interval "
        "for the relative lift."
    ),
    "value_per_session_sequential": "Always-valid confidence sequence with the Welch variance; Fieller relative lift.",
    "multiple_comparisons": (
        "Holm-Bonferroni across treatments (per metric) when there are 2 or more treatments; intervals at "
        "Holm's step-down levels, so each excludes 0 exactly when its Holm-adjusted p < alpha."
    ),
    "srm": "Pearson chi-square goodness of fit of exposed sessions against the allocations; a flag makes every verdict unreliable.",
    "minimum_detectable_effect": (
        "Absolute conversion-rate difference detectable with 80% power at the current sizes: "
        "(interval multiplier + z_power) * pooled SE at the control's rate."
    ),
}

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
    srm_result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Analyze one experiment; returns a JSON-ready dict (no NaN or infinity anywhere).

    Shape (None wherever a number is undefined, with a `message` saying why):
        confidence, sequential, sequential_planned_sessions, sequential_tuning {source,
        planned_sessions, target_mde, planned_sessions_per_comparison {variant_key: n}},
        control_variant_key, multiple_comparison_correction ("holm" | None), primary_metric,
        guardrail_metrics, thresholds, methods, rate_definitions, messages [str],
        srm {p_value, chi_square, df, flagged, threshold, min_sessions, observed, expected,
             excluded_variants, message},
        multi_variant_sessions {count, share, threshold, flagged, message},
        variants [{variant_key, is_control, allocation, sessions, conversions, conversion_rate,
                   conversion_rate_interval {low, high}, value_sum, value_per_session,
                   status_code, status, status_message, minimum_detectable_effect {absolute,
                   relative, power, alpha} | None,
                   comparison: None for the control, else {
                       conversion_rate: {control, variant, absolute_lift {estimate, ci_low, ci_high},
                           relative_lift {...}, statistic, df, p_value, p_value_raw, p_value_adjusted,
                           significant, interval_confidence, interval_adjusted, message,
                           bayesian {chance_to_beat_control, expected_loss, expected_loss_control,
                                     credible_interval {low, high}, message}},
                       value_per_session: {same keys as conversion_rate, without bayesian}}}]

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
    for name, value in (("sequential_planned_sessions", sequential_planned_sessions), ("planned_sessions", planned_sessions)):
        if value is not None and not (_is_number(value) and value > 0):
            raise ValueError(f"{name} must be a positive number")
    if target_mde is not None and not (_is_number(target_mde) and target_mde > 0):
        raise ValueError("target_mde must be a positive relative lift (0.05 = +5%)")
    if not (_is_number(power) and 0.5 <= power < 1.0):
        raise ValueError("power must be in [0.5, 1)")
    if strata is not None and sequential:
        raise ValueError("the stratified all-phases analysis is fixed-horizon: sequential applies to one phase")
    inputs = MetricInputs(dict(metrics or {}), strata)
    alpha = 1.0 - confidence
    variants = list(variants)
    messages: list[str] = []

    problems = {id(v): _input_problem(v) for v in variants}
    control, control_problem = _find_control(variants)
    if control_problem:
        messages.append(control_problem)
    elif problems[id(control)]:
        messages.append(f"The control has invalid data ({problems[id(control)]}); nothing can be compared.")
    keys = [v.variant_key for v in variants]
    if len(set(keys)) != len(keys):
        messages.append("Some variant keys appear more than once; each row is analyzed separately.")

    srm = srm_result if srm_result is not None else sample_ratio_mismatch([v for v in variants if not problems[id(v)]])
    if srm["flagged"]:
        messages.append(srm["message"] + " Every verdict is marked unreliable until this is fixed.")

    treatments = [v for v in variants if v is not control and not v.is_control]
    can_compare = control is not None and not problems[id(control)]
    compared = [v for v in treatments if can_compare and not problems[id(v)]]
    tuning = _sequential_tuning(
        control, compared, variants, sequential, sequential_planned_sessions, planned_sessions, target_mde, alpha, power
    )
    planned_for = tuning["planned_sessions_per_comparison"]
    comparisons = {
        id(v): _compare(control, v, confidence, sequential, planned_for.get(v.variant_key, DEFAULT_PLANNED_SESSIONS), inputs)
        for v in compared
    }
    correction = "holm" if len(treatments) >= 2 else None
    for metric in ("conversion_rate", "value_per_session", *inputs.metrics):
        _apply_significance(
            [(v, block_of(comparisons[id(v)], metric)) for v in compared],
            metric,
            control,
            confidence,
            correction,
            sequential,
            planned_for,
            inputs,
        )
    guardrails = [g for g in guardrail_metrics if g != primary_metric]

    variant_rows = []
    for v in variants:
        comparison = comparisons.get(id(v))
        if v is control:
            code, status_message = StatusCode.CONTROL, "Baseline that every other variant is compared with."
        elif problems[id(v)]:
            code, status_message = StatusCode.NOT_ANALYZED, f"Invalid data: {problems[id(v)]}."
        elif comparison is None:
            code = StatusCode.NOT_ANALYZED
            status_message = control_problem or "The control's data is invalid, so nothing can be compared."
        else:
            code, status_message = verdict(
                _verdict_counts(control, primary_metric, inputs),
                _verdict_counts(v, primary_metric, inputs),
                block_of(comparison, primary_metric),
                {name: block_of(comparison, name) for name in guardrails},
                srm["flagged"],
                metric_label=metric_label(primary_metric),
            )
        mde = _mde(control, v, comparison, alpha, len(treatments), sequential, planned_for, power)
        extra_blocks = comparison.pop("metrics") if comparison is not None else None
        row = _variant_row(v, confidence, code, status_message, comparison, problems[id(v)], mde)
        row["metrics"] = {name: metric_value(inputs.value_stats(name, v.variant_key)) for name in inputs.metrics}
        row["metric_comparisons"] = extra_blocks
        variant_rows.append(row)

    multi = _count(multi_variant_sessions)
    total_sessions = sum(v.sessions for v in variants if not problems[id(v)])
    share = multi / (total_sessions + multi) if total_sessions + multi else 0.0
    multi_flagged = share > MULTI_VARIANT_WARNING_SHARE
    if multi_flagged:
        messages.append(
            f"{multi} sessions saw more than one variant ({share:.1%} of all, above the "
            f"{MULTI_VARIANT_WARNING_SHARE:.0%} threshold); check that assignment is sticky."
        )

    result = {
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
        "methods": _methods(sequential),
        "rate_definitions": RATE_DEFINITIONS,
        "messages": messages,
        "srm": srm,
        "multi_variant_sessions": {
            "count": multi,
            "share": share,
            "threshold": MULTI_VARIANT_WARNING_SHARE,
            "flagged": multi_flagged,
            "message": (
                f"{multi} session(s) saw more than one variant and were excluded from every variant."
                if multi
                else "No session saw more than one variant."
            ),
        },
        "variants": variant_rows,
    }
    return _json_safe(result)


RATE_DEFINITIONS = {
    "analysis": (
        "analysis.variants[].conversion_rate: converted / exposed sessions that saw only this variant "
        "(sessions exposed to several variants are left out, as every test here assumes one arm per session)."
    ),
    "results": (
        "variants[].conversion_rate of the results body: converted / exposed sessions of this variant, "
        "including sessions also exposed to another variant (the original API's definition)."
    ),
}


# --- helpers ---------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _sequential_tuning(control, compared, variants, sequential, per_comparison, planned_total, target_mde, alpha, power):
    """Planned sessions of control + each treatment, and where the number came from."""
    planned: dict[str, float] = {}
    source = "default"
    if per_comparison is not None:
        source = "sequential_planned_sessions"
        planned = {v.variant_key: float(per_comparison) for v in compared}
    elif planned_total is not None:
        source = "planned_sessions"
        weight = sum(max(0, x.allocation) for x in variants) or 1
        for v in compared:
            share = (max(0, control.allocation) + max(0, v.allocation)) / weight
            # a treatment with 0 % allocation still gets a usable (if meaningless) tuning
            planned[v.variant_key] = max(1.0, planned_total * share) if share > 0 else float(planned_total)
    elif target_mde is not None and control is not None and 0 < control.conversions.mean < 1:
        source = "target_mde"
        for v in compared:
            try:
                planned[v.variant_key] = 2.0 * sessions_per_variant(control.conversions.mean, target_mde, alpha, power)
            except ValueError:
                planned[v.variant_key] = float(DEFAULT_PLANNED_SESSIONS)
    if not planned:
        source = "default" if source != "target_mde" else source
        planned = {v.variant_key: float(DEFAULT_PLANNED_SESSIONS) for v in compared}
    if not sequential:
        source = None
    return {
        "source": source,
        "planned_sessions": planned_total,
        "target_mde": target_mde,
        "planned_sessions_per_comparison": planned,
    }


def _verdict_counts(v: VariantInput, primary_metric: str, inputs: MetricInputs) -> tuple[int, int]:
    """(sessions, sessions with the primary event) behind the not-enough-data rule; conversions unless
    the primary is another binomial metric."""
    stats = inputs.value_stats(primary_metric, v.variant_key)
    if isinstance(stats, ProportionStats):
        return v.sessions, stats.converted
    return v.sessions, v.conversions.converted


def _count(value: Any) -> int:
    """A non-negative session count from whatever the caller passed (None, numpy ints, junk -> 0)."""
    if isinstance(value, numbers.Real) and math.isfinite(value) and value > 0:
        return int(value)
    return 0


def _find_control(variants: list[VariantInput]) -> tuple[VariantInput | None, str | None]:
    controls = [v for v in variants if v.is_control]
    if not controls:
        return None, "No control variant is defined, so no variant can be compared."
    if len(controls) > 1:
        return None, f"{len(controls)} variants are marked as control; exactly one is needed to compare."
    return controls[0], None


def _input_problem(v: VariantInput) -> str | None:
    """Describe counts that cannot come from a correct query (they would yield nonsense numbers)."""
    c, value = v.conversions, v.value
    counts = (c.n, c.converted, value.n)
    if not all(isinstance(x, numbers.Integral) for x in counts) or c.n < 0 or not 0 <= c.converted <= c.n:
        return f"conversions {c.converted!r} of {c.n!r} sessions is impossible"
    totals = (value.sum, value.sum_squares)
    if not all(isinstance(x, numbers.Real) and math.isfinite(x) for x in totals) or value.sum_squares < 0:
        return "the conversion value totals are not finite non-negative numbers"
    if value.n != c.n:
        return f"value statistics cover {value.n!r} sessions but conversions cover {c.n!r}"
    return None


def _tests(control, variant, confidence: float, sequential: bool, planned: float, tuning_confidence: float, inputs: MetricInputs) -> dict[str, tuple[LiftTest, float | None, float | None]]:
    """{block name: (test, control value, variant value)} for every metric of one comparison."""
    if inputs.strata is not None:
        c_strata, v_strata = inputs.strata.get(control.variant_key, []), inputs.strata.get(variant.variant_key, [])
        groups = {
            "conversion_rate": ([s.conversions for s in c_strata], [s.conversions for s in v_strata]),
            "value_per_session": ([s.value for s in c_strata], [s.value for s in v_strata]),
        }
    else:
        groups = {"conversion_rate": (control.conversions, variant.conversions), "value_per_session": (control.value, variant.value)}
    for name, by_variant in inputs.metrics.items():
        groups[name] = (by_variant.get(control.variant_key), by_variant.get(variant.variant_key))
    return {
        name: compare_metric(c, v, confidence, sequential, planned, tuning_confidence) for name, (c, v) in groups.items()
    }


def _compare(control: VariantInput, variant: VariantInput, confidence: float, sequential: bool, planned: float, inputs: MetricInputs) -> dict:
    tests = _tests(control, variant, confidence, sequential, planned, confidence, inputs)
    blocks = {name: _test_block(c_value, v_value, test, control, variant) for name, (test, c_value, v_value) in tests.items()}
    if inputs.strata is None:
        bayes = beta_binomial_comparison(control.conversions, variant.conversions, confidence)
        blocks["conversion_rate"]["bayesian"] = _bayesian_block(bayes)
    else:
        blocks["conversion_rate"]["bayesian"] = _bayesian_block(
            BayesianResult(None, None, None, None, None, "Not computed for the stratified all-phases analysis.")
        )
    comparison = {"conversion_rate": blocks.pop("conversion_rate"), "value_per_session": blocks.pop("value_per_session")}
    comparison["metrics"] = blocks
    return comparison


def _test_block(control_mean: float | None, variant_mean: float | None, test: LiftTest, control, variant) -> dict:
    has_data = control.sessions > 0 and variant.sessions > 0
    return {
        "control": control_mean if control.sessions > 0 else None,
        "variant": variant_mean if variant.sessions > 0 else None,
        "absolute_lift": _estimate(test.absolute),
        "relative_lift": _estimate(test.relative),
        "statistic": test.statistic,
        "df": test.df,
        "p_value": test.p_value,  # replaced by the adjusted value when a correction applies
        "p_value_raw": test.p_value,
        "p_value_adjusted": None,
        "significant": None,
        "interval_confidence": None,
        "interval_adjusted": False,
        "message": " ".join(test.messages) or (None if has_data else "A group has no exposed sessions yet."),
    }


def _estimate(e: Estimate) -> dict:
    return {"estimate": e.estimate, "ci_low": e.ci_low, "ci_high": e.ci_high}


def _bayesian_block(b: BayesianResult) -> dict:
    return {
        "chance_to_beat_control": b.chance_to_beat_control,
        "expected_loss": b.expected_loss,
        "expected_loss_control": b.expected_loss_control,
        "credible_interval": {"low": b.credible_low, "high": b.credible_high},
        "message": b.message,
    }


def holm_interval_levels(p_values: Sequence[float | None], alpha: float) -> list[float | None]:
    """Per-hypothesis alpha of intervals that agree with Holm's step-down decisions.

    With the raw p-values sorted, p_(1) <= ... <= p_(m), Holm rejects H_(k) while p_(k) < alpha / (m - k + 1)
    for it and every smaller one, and stops at the first rank s that fails. The interval of rank k is
    at level alpha / (m - min(k, s) + 1): a rejected hypothesis' interval excludes 0 (p_(k) is below its
    level), a retained one's includes 0 (p_(k) >= p_(s) >= alpha / (m - s + 1)). They are not
    simultaneous intervals (Bonferroni's alpha / m would be), but never contradict the verdict.
    """
    ranked = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(ranked)
    levels: list[float | None] = [None] * len(p_values)
    stop = m + 1
    for rank, (p, _) in enumerate(ranked, start=1):
        if p >= alpha / (m - rank + 1):
            stop = rank
            break
    for rank, (_, index) in enumerate(ranked, start=1):
        levels[index] = alpha / (m - min(rank, stop) + 1)
    return levels


def _apply_significance(pairs, metric, control, confidence, correction, sequential, planned_for, inputs) -> None:
    """Fill p_value / p_value_adjusted / significant and the intervals' level (Holm-adjusted when 2+ treatments)."""
    alpha = 1.0 - confidence
    blocks = [block for _, block in pairs]
    if correction != "holm":
        for block in blocks:
            block["interval_confidence"] = confidence
            block["significant"] = None if block["p_value"] is None else block["p_value"] < alpha
        return
    for block, adjusted in zip(blocks, holm_adjust([b["p_value_raw"] for b in blocks])):
        block["p_value_adjusted"] = adjusted
        block["p_value"] = adjusted
    levels = holm_interval_levels([b["p_value_raw"] for b in blocks], alpha)
    for (variant, block), level in zip(pairs, levels):
        block["interval_confidence"] = confidence
        if level is None:
            block["significant"] = None
            continue
        adjusted_confidence = 1.0 - level
        test = _tests(control, variant, adjusted_confidence, sequential, planned_for[variant.variant_key], confidence, inputs)[metric][0]
        block["absolute_lift"] = _estimate(test.absolute)
        block["relative_lift"] = _estimate(test.relative)
        block["interval_confidence"] = adjusted_confidence
        block["interval_adjusted"] = True
        block["significant"] = block["p_value"] < alpha


def _mde(control, variant, comparison, alpha, treatments, sequential, planned_for, power) -> dict | None:
    """Minimum detectable effect on the conversion rate at the current sizes (None for the control)."""
    if comparison is None or control is None:
        return None
    level = comparison_alpha(alpha, treatments + 1)
    if sequential:
        total = control.sessions + variant.sessions
        rho = mixture_rho(alpha, planned_for[variant.variant_key])
        multiplier = sequential_half_width(1.0, total, level, rho) if total > 0 else None
    else:
        multiplier = normal_ppf(1.0 - level / 2.0)
    rate = control.conversions.mean
    absolute = (
        minimum_detectable_effect(rate, control.sessions, variant.sessions, multiplier, power)
        if multiplier is not None
        else None
    )
    return {
        "absolute": absolute,
        "relative": absolute / rate if absolute is not None and rate > 0 else None,
        "power": power,
        "alpha": level,
    }


def _variant_row(
    v: VariantInput,
    confidence: float,
    code: StatusCode,
    status_message: str,
    comparison: dict | None,
    problem: str | None,
    mde: dict | None,
) -> dict:
    if problem:
        rate = low = high = value_mean = None
    else:
        rate, low, high = rate_interval(v.conversions.converted, v.sessions, confidence)
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
        "minimum_detectable_effect": mde,
        "comparison": comparison,
    }


def _methods(sequential: bool) -> dict[str, str]:
    return {
        "conversion_rate": METHODS["conversion_rate_sequential" if sequential else "conversion_rate"],
        "bayesian": METHODS["bayesian"],
        "value_per_session": METHODS["value_per_session_sequential" if sequential else "value_per_session"],
        "multiple_comparisons": METHODS["multiple_comparisons"],
        "srm": METHODS["srm"],
        "minimum_detectable_effect": METHODS["minimum_detectable_effect"],
        "conversion_rate_interval": "Wilson score interval per variant.",
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
