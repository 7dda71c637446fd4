"""Experiment-level analysis: turns per-variant aggregates into the JSON `analysis` of the results API.

The conversion rate is the primary metric: it alone decides each variant's plain-language `status`.
The conversion value per exposed session is reported alongside with its own tests.

Nothing here raises for odd data (no sessions, no conversions, zero variance, missing control, bad
counts): the affected numbers become None and a `message` says why. The only exceptions are
ValueErrors for arguments the caller chose: `confidence` outside ALLOWED_CONFIDENCE_LEVELS and a
non-positive `sequential_planned_sessions`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

from .bayesian import BayesianResult, beta_binomial_comparison
from .frequentist import Estimate, LiftTest, holm_adjust, two_proportion_z_test, welch_t_test, wilson_interval
from .models import VariantInput, validate_confidence
from .sequential import DEFAULT_PLANNED_SESSIONS, sequential_test
from .srm import sample_ratio_mismatch

# Below these counts (in the variant or in the control) the verdict is "not enough data": the normal
# approximations behind the tests are unreliable and early results swing wildly. Numbers are still
# reported when they are defined.
MIN_SESSIONS = 100
MIN_CONVERSIONS = 5
# Sessions seen in several variants are dropped upstream; above this share of all sessions that is a
# sign of broken (non-sticky) assignment worth an experiment-level message.
MULTI_VARIANT_WARNING_SHARE = 0.01

STATUS_CONTROL = "control"
STATUS_NOT_ENOUGH_DATA = "not enough data"
STATUS_WIN = "significant win"
STATUS_LOSS = "significant loss"
STATUS_NO_DIFFERENCE = "no detectable difference"
STATUS_NOT_ANALYZED = "not analyzed"

METHODS = {
    "conversion_rate": (
        "Two-proportion z-test: p-value with the pooled standard error, confidence intervals with the "
        "unpooled (Wald) standard error; relative lift interval by the delta method."
    ),
    "conversion_rate_sequential": (
        "Always-valid asymptotic confidence sequence (Waudby-Smith et al. 2023, normal mixture, as in "
        "GrowthBook's sequential testing) with the unpooled variance; p-value = 1 / mixture e-value."
    ),
    "bayesian": (
        "Beta-binomial with a uniform Beta(1, 1) prior: exact chance to beat control and expected loss; "
        "credible interval of the absolute lift from the posteriors' difference (normal approximation with "
        "Cornish-Fisher skewness/kurtosis correction)."
    ),
    "value_per_session": (
        "Welch t-test with Welch-Satterthwaite degrees of freedom; relative lift interval by the delta method."
    ),
    "value_per_session_sequential": "Always-valid asymptotic confidence sequence with the Welch variance.",
    "multiple_comparisons": "Holm-Bonferroni across treatments (per metric) when there are 2 or more treatments.",
    "srm": "Pearson chi-square goodness of fit of exposed sessions against the allocations.",
}


def rate_interval(
    converted: int | None, n: int | None, confidence: float = 0.95
) -> tuple[float | None, float | None, float | None]:
    """(rate, low, high) with the Wilson score interval, for time series points.

    Wilson rather than Wald because time series buckets are often small: it stays inside [0, 1] and
    gives a sensible interval at 0 or n conversions. Returns (None, None, None) when there is no
    session (n is None or <= 0); `converted` is clamped into [0, n]. Raises ValueError for a
    confidence outside ALLOWED_CONFIDENCE_LEVELS.
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
    sequential_planned_sessions: int = DEFAULT_PLANNED_SESSIONS,
) -> dict[str, Any]:
    """Analyze one experiment; returns a JSON-ready dict (no NaN or infinity anywhere).

    Shape (None wherever a number is undefined, with a `message` saying why):
        confidence, sequential, sequential_planned_sessions, control_variant_key,
        multiple_comparison_correction ("holm" | None), thresholds, methods, messages [str],
        srm {p_value, chi_square, df, flagged, threshold, min_sessions, observed, expected,
             excluded_variants, message},
        multi_variant_sessions {count, message},
        variants [{variant_key, is_control, allocation, sessions, conversions, conversion_rate,
                   conversion_rate_interval {low, high}, value_sum, value_per_session,
                   status, status_message,
                   comparison: None for the control, else {
                       conversion_rate: {control, variant, absolute_lift {estimate, ci_low, ci_high},
                           relative_lift {...}, statistic, df, p_value, p_value_raw, p_value_adjusted,
                           significant, message,
                           bayesian {chance_to_beat_control, expected_loss, expected_loss_control,
                                     credible_interval {low, high}, message}},
                       value_per_session: {same keys as conversion_rate, without bayesian}}}]

    `p_value` is the one `significant` uses: Holm-adjusted when there are 2+ treatments (then equal
    to `p_value_adjusted`), else raw. Intervals are not multiplicity-adjusted.

    `sequential_planned_sessions` tunes the sequential boundary (gbstats' `sequential_tuning_parameter`):
    the expected exposed sessions of control + one treatment when the experiment is read; the
    intervals are narrowest there and valid at every sample size.
    """
    confidence = validate_confidence(confidence)
    if not (
        isinstance(sequential_planned_sessions, (int, float))
        and math.isfinite(sequential_planned_sessions)
        and sequential_planned_sessions > 0
    ):
        raise ValueError("sequential_planned_sessions must be a positive number")
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

    srm = sample_ratio_mismatch([v for v in variants if not problems[id(v)]])
    if srm["flagged"]:
        messages.append(srm["message"])

    treatments = [v for v in variants if v is not control and not v.is_control]
    can_compare = control is not None and not problems[id(control)]
    comparisons = {
        id(v): _compare(control, v, confidence, sequential, sequential_planned_sessions)
        for v in treatments
        if can_compare and not problems[id(v)]
    }
    correction = "holm" if len(treatments) >= 2 else None
    for metric in ("conversion_rate", "value_per_session"):
        _apply_significance([comparisons[id(v)][metric] for v in treatments if id(v) in comparisons], alpha, correction)

    variant_rows = []
    for v in variants:
        comparison = comparisons.get(id(v))
        if v is control:
            status, status_message = STATUS_CONTROL, "Baseline that every other variant is compared with."
        elif problems[id(v)]:
            status, status_message = STATUS_NOT_ANALYZED, f"Invalid data: {problems[id(v)]}."
        elif comparison is None:
            status = STATUS_NOT_ANALYZED
            status_message = control_problem or "The control's data is invalid, so nothing can be compared."
        else:
            status, status_message = _status(control, v, comparison["conversion_rate"])
        variant_rows.append(_variant_row(v, confidence, status, status_message, comparison, problems[id(v)]))

    multi = _count(multi_variant_sessions)
    total_sessions = sum(v.sessions for v in variants if not problems[id(v)])
    if multi > MULTI_VARIANT_WARNING_SHARE * (total_sessions + multi):
        messages.append(
            f"{multi} sessions saw more than one variant ({multi / (total_sessions + multi):.1%} of all); "
            "check that assignment is sticky."
        )

    result = {
        "confidence": confidence,
        "sequential": bool(sequential),
        "sequential_planned_sessions": sequential_planned_sessions if sequential else None,
        "control_variant_key": control.variant_key if control is not None else None,
        "multiple_comparison_correction": correction,
        "thresholds": {"min_sessions": MIN_SESSIONS, "min_conversions": MIN_CONVERSIONS},
        "methods": _methods(sequential),
        "messages": messages,
        "srm": srm,
        "multi_variant_sessions": {
            "count": multi,
            "message": (
                f"{multi} session(s) saw more than one variant and were excluded from every variant."
                if multi
                else "No session saw more than one variant."
            ),
        },
        "variants": variant_rows,
    }
    return _json_safe(result)


# --- helpers ---------------------------------------------------------------------------------------


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


def _compare(control: VariantInput, variant: VariantInput, confidence: float, sequential: bool, planned: float) -> dict:
    if sequential:
        conversion = sequential_test(control.conversions, variant.conversions, confidence, planned)
        value = sequential_test(control.value, variant.value, confidence, planned)
    else:
        conversion = two_proportion_z_test(control.conversions, variant.conversions, confidence)
        value = welch_t_test(control.value, variant.value, confidence)
    bayes = beta_binomial_comparison(control.conversions, variant.conversions, confidence)
    conversion_block = _test_block(control.conversions.mean, variant.conversions.mean, conversion, control, variant)
    conversion_block["bayesian"] = _bayesian_block(bayes)
    return {
        "conversion_rate": conversion_block,
        "value_per_session": _test_block(control.value.mean, variant.value.mean, value, control, variant),
    }


def _test_block(control_mean: float, variant_mean: float, test: LiftTest, control, variant) -> dict:
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


def _apply_significance(blocks: list[dict], alpha: float, correction: str | None) -> None:
    """Fill p_value / p_value_adjusted / significant; Holm when several treatments share the control."""
    if correction == "holm":
        for block, adjusted in zip(blocks, holm_adjust([b["p_value_raw"] for b in blocks])):
            block["p_value_adjusted"] = adjusted
            block["p_value"] = adjusted
    for block in blocks:
        block["significant"] = None if block["p_value"] is None else block["p_value"] < alpha


def _status(control: VariantInput, variant: VariantInput, conversion: dict) -> tuple[str, str]:
    short = []
    for label, v in (("this variant", variant), ("the control", control)):
        if v.sessions < MIN_SESSIONS or v.conversions.converted < MIN_CONVERSIONS:
            short.append(f"{label} has {v.sessions} exposed sessions and {v.conversions.converted} conversions")
    if short:
        return STATUS_NOT_ENOUGH_DATA, (
            f"Needs at least {MIN_SESSIONS} exposed sessions and {MIN_CONVERSIONS} conversions in both this "
            f"variant and the control; {' and '.join(short)}."
        )
    if conversion["significant"] is None:
        return STATUS_NOT_ENOUGH_DATA, conversion["message"] or "The conversion rates cannot be compared yet."
    lift = conversion["absolute_lift"]["estimate"]
    kind = "Holm-adjusted p" if conversion["p_value_adjusted"] is not None else "p"
    p_text = f"{kind} = {conversion['p_value']:.2g}"
    if conversion["significant"]:
        direction = "higher" if lift > 0 else "lower"
        return (STATUS_WIN if lift > 0 else STATUS_LOSS), (
            f"The conversion rate is {direction} than the control's ({p_text})."
        )
    return STATUS_NO_DIFFERENCE, (
        f"No significant difference in conversion rate from the control ({p_text}); "
        "the true difference may still be anywhere within the interval."
    )


def _variant_row(
    v: VariantInput, confidence: float, status: str, status_message: str, comparison: dict | None, problem: str | None
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
        "status": status,
        "status_message": status_message,
        "comparison": comparison,
    }


def _methods(sequential: bool) -> dict[str, str]:
    return {
        "conversion_rate": METHODS["conversion_rate_sequential" if sequential else "conversion_rate"],
        "bayesian": METHODS["bayesian"],
        "value_per_session": METHODS["value_per_session_sequential" if sequential else "value_per_session"],
        "multiple_comparisons": METHODS["multiple_comparisons"],
        "srm": METHODS["srm"],
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
