"""One treatment against the control: the test of every metric as an answer block, Holm's
adjustment across treatments, and the minimum detectable effect.

Every `significant` is exactly "the interval shown excludes 0": with 2+ treatments the intervals are
Holm-adjusted (`holm_interval_levels`) and the p-values Holm-adjusted, and the two agree.
"""

from __future__ import annotations

from typing import Any, Sequence

from .answer_types import BayesianComparison, LiftEstimate, MetricComparison, MinimumDetectableEffect
from .bayesian import BayesianResult, beta_binomial_comparison
from .distributions import normal_ppf
from .frequentist import Estimate, LiftTest, holm_adjust
from .metric_tests import MetricInputs, compare_metric
from .models import VariantInput
from .planning import comparison_alpha, minimum_detectable_effect
from .sequential import mixture_rho, sequential_half_width

# A comparison while it is built: the two built-in MetricComparison blocks and, under "metrics",
# the extra ones by name (they move to the variant's `metric_comparisons` in the answer).
Blocks = dict[str, Any]


def tests(
    control: VariantInput,
    variant: VariantInput,
    confidence: float,
    sequential: bool,
    planned: float,
    tuning_confidence: float,
    inputs: MetricInputs,
    only: str | None = None,
) -> dict[str, tuple[LiftTest, float | None, float | None]]:
    """{block name: (test, control value, variant value)} for every metric of one comparison (or
    the metric `only`: the Holm pass retests one metric at a time, and each test of a rate solves
    its score interval numerically, so testing all of them there made the cost quadratic)."""
    groups: dict[str, tuple[object, object]]
    if inputs.strata is not None:
        c_strata, v_strata = inputs.strata.get(control.variant_key, []), inputs.strata.get(variant.variant_key, [])
        groups = {
            "conversion_rate": ([s.conversions for s in c_strata], [s.conversions for s in v_strata]),
            "value_per_session": ([s.value for s in c_strata], [s.value for s in v_strata]),
        }
    else:
        groups = {
            "conversion_rate": (control.conversions, variant.conversions),
            "value_per_session": (control.value, variant.value),
        }
    for name, by_variant in inputs.metrics.items():
        groups[name] = (by_variant.get(control.variant_key), by_variant.get(variant.variant_key))
    return {
        name: compare_metric(c, v, confidence, sequential, planned, tuning_confidence)  # type: ignore[arg-type]
        for name, (c, v) in groups.items()
        if only is None or name == only
    }


def compare(
    control: VariantInput, variant: VariantInput, confidence: float, sequential: bool, planned: float, inputs: MetricInputs
) -> Blocks:
    """Every metric's block, before the significance is filled in (`apply_significance`)."""
    found = tests(control, variant, confidence, sequential, planned, confidence, inputs)
    blocks = {name: metric_block(c_value, v_value, test, control, variant) for name, (test, c_value, v_value) in found.items()}
    if inputs.strata is None:
        bayes = beta_binomial_comparison(control.conversions, variant.conversions, confidence)
    else:
        bayes = BayesianResult(None, None, None, None, None, "Not computed for the stratified all-phases analysis.")
    blocks["conversion_rate"]["bayesian"] = bayesian_block(bayes)
    comparison: Blocks = {"conversion_rate": blocks.pop("conversion_rate"), "value_per_session": blocks.pop("value_per_session")}
    comparison["metrics"] = blocks
    return comparison


def metric_block(
    control_mean: float | None, variant_mean: float | None, test: LiftTest, control: VariantInput, variant: VariantInput
) -> MetricComparison:
    has_data = control.sessions > 0 and variant.sessions > 0
    return {
        "control": control_mean if control.sessions > 0 else None,
        "variant": variant_mean if variant.sessions > 0 else None,
        "absolute_lift": estimate(test.absolute),
        "relative_lift": estimate(test.relative),
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


def estimate(e: Estimate) -> LiftEstimate:
    return {"estimate": e.estimate, "ci_low": e.ci_low, "ci_high": e.ci_high}


def bayesian_block(b: BayesianResult) -> BayesianComparison:
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


def apply_significance(
    pairs: list[tuple[VariantInput, MetricComparison]],
    metric: str,
    control: VariantInput | None,
    confidence: float,
    correction: str | None,
    sequential: bool,
    planned_for: dict[str, float],
    inputs: MetricInputs,
) -> None:
    """Fill p_value / p_value_adjusted / significant and the intervals' level (Holm-adjusted when 2+ treatments)."""
    alpha = 1.0 - confidence
    blocks = [block for _, block in pairs]
    if correction != "holm":
        for block in blocks:
            block["interval_confidence"] = confidence
            p_value = block["p_value"]
            block["significant"] = None if p_value is None else p_value < alpha
        return
    if control is None:  # then nothing was compared (pairs is empty)
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
        planned = planned_for[variant.variant_key]
        test = tests(control, variant, adjusted_confidence, sequential, planned, confidence, inputs, only=metric)[metric][0]
        block["absolute_lift"] = estimate(test.absolute)
        block["relative_lift"] = estimate(test.relative)
        block["interval_confidence"] = adjusted_confidence
        block["interval_adjusted"] = True
        block["significant"] = block["p_value"] < alpha  # type: ignore[operator]  # a level means a p-value


def mde(
    control: VariantInput | None,
    variant: VariantInput,
    comparison: Blocks | None,
    alpha: float,
    treatments: int,
    sequential: bool,
    planned_for: dict[str, float],
    power: float,
) -> MinimumDetectableEffect | None:
    """Minimum detectable effect on the conversion rate at the current sizes (None for the control)."""
    if comparison is None or control is None:
        return None
    level = comparison_alpha(alpha, treatments + 1)
    multiplier: float | None
    if sequential:
        total = control.sessions + variant.sessions
        rho = mixture_rho(alpha, planned_for[variant.variant_key])
        multiplier = sequential_half_width(1.0, total, level, rho) if total > 0 else None
    else:
        multiplier = normal_ppf(1.0 - level / 2.0)
    rate = control.conversions.mean
    absolute = (
        minimum_detectable_effect(rate, control.sessions, variant.sessions, multiplier, power) if multiplier is not None else None
    )
    return {
        "absolute": absolute,
        "relative": absolute / rate if absolute is not None and rate > 0 else None,
        "power": power,
        "alpha": level,
    }
