"""Fixed-horizon frequentist comparisons of one treatment against the control.

Conversion rate: two-proportion z-test. The p-value uses the *pooled* standard error (the classic
test of H0: p_control = p_variant, identical to statsmodels' `proportions_ztest` and to the 2x2
chi-square test without continuity correction); the confidence intervals use the *unpooled* (Wald)
standard error, because under the alternative the two rates differ. The two can disagree right at the
significance boundary; `significant` always follows the p-value.

Conversion value per exposed session: Welch's unequal-variance t-test with Welch-Satterthwaite degrees
of freedom (identical to scipy's `ttest_ind_from_stats(equal_var=False)` and gbstats' `TwoSidedTTest`).

Relative lift uses the delta-method variance of (mean_b - mean_a) / mean_a exactly as gbstats'
`frequentist_variance`, which treats the control mean in the denominator as random.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from .distributions import normal_ppf, normal_two_sided_p, student_t_ppf, student_t_two_sided_p
from .models import ProportionStats, SampleMeanStats


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval; any part is None when it is not defined."""

    estimate: float | None
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass(frozen=True)
class LiftTest:
    absolute: Estimate
    relative: Estimate
    p_value: float | None
    statistic: float | None = None  # z or t
    df: float | None = None  # Welch degrees of freedom (t-test only)
    messages: tuple[str, ...] = ()


_NO_ESTIMATE = Estimate(None)


def absolute_variance(control, variant) -> float:
    """Variance of mean_b - mean_a (unpooled)."""
    return control.variance / control.n + variant.variance / variant.n


def relative_variance(control, variant) -> float:
    """Delta-method variance of (mean_b - mean_a) / mean_a, as gbstats' `frequentist_variance`."""
    mean_a, mean_b = control.mean, variant.mean
    return variant.variance / (mean_a**2 * variant.n) + control.variance * mean_b**2 / (mean_a**4 * control.n)


def zero_variance_message(control, variant) -> str:
    """Why nothing can be tested when neither group varies, in the metric's own words."""
    if isinstance(control, ProportionStats):
        pooled_rate = (control.converted + variant.converted) / (control.n + variant.n)
        if pooled_rate == 0.0:
            return "No exposed session has converted in either group yet, so there is nothing to compare."
        if pooled_rate == 1.0:
            return "Every exposed session converted in both groups, so there is nothing to compare."
        return "Each group's observed rate is 0% or 100%, so the interval is undefined."
    return "The value per session has zero variance in both groups, so no interval or test is possible."


def lift_estimates(
    control, variant, half_width: Callable[[float], float], zero_variance_text: str
) -> tuple[Estimate, Estimate, list[str]]:
    """Absolute and relative lift with intervals estimate +- half_width(variance of the estimate).

    Shared by the fixed-horizon tests (half width = quantile * SE) and the sequential test (half width
    from the confidence-sequence boundary). Undefined parts come back as None plus a message.
    """
    messages: list[str] = []
    difference = variant.mean - control.mean
    var_abs = absolute_variance(control, variant)
    if var_abs > 0:
        w = half_width(var_abs)
        absolute = Estimate(difference, difference - w, difference + w)
    else:
        absolute = Estimate(difference)
        messages.append(zero_variance_text)
    if control.mean == 0:
        relative = _NO_ESTIMATE
        messages.append("The control's average is 0, so the relative lift is undefined.")
    else:
        lift = difference / control.mean
        var_rel = relative_variance(control, variant)
        if var_rel > 0:
            w = half_width(var_rel)
            relative = Estimate(lift, lift - w, lift + w)
        else:
            relative = Estimate(lift)
            if var_abs > 0:
                messages.append("The relative lift's interval is undefined (zero variance).")
    return absolute, relative, messages


def two_proportion_z_test(control: ProportionStats, variant: ProportionStats, confidence: float) -> LiftTest:
    """Two-sided z-test of equal conversion rates; pooled SE for the p-value, unpooled for the CIs."""
    if control.n <= 0 or variant.n <= 0:
        return LiftTest(_NO_ESTIMATE, _NO_ESTIMATE, None, messages=("A group has no exposed sessions yet.",))
    z_quantile = normal_ppf(0.5 + confidence / 2.0)
    absolute, relative, messages = lift_estimates(
        control, variant, lambda v: z_quantile * math.sqrt(v), zero_variance_message(control, variant)
    )
    pooled_rate = (control.converted + variant.converted) / (control.n + variant.n)
    pooled_se = math.sqrt(pooled_rate * (1.0 - pooled_rate) * (1.0 / control.n + 1.0 / variant.n))
    if pooled_se == 0:
        return LiftTest(absolute, relative, None, messages=tuple(messages))
    z = (variant.mean - control.mean) / pooled_se
    return LiftTest(absolute, relative, normal_two_sided_p(z), statistic=z, messages=tuple(messages))


def welch_degrees_of_freedom(control: SampleMeanStats, variant: SampleMeanStats) -> float:
    a = control.variance / control.n
    b = variant.variance / variant.n
    return (a + b) ** 2 / (a * a / (control.n - 1) + b * b / (variant.n - 1))


def welch_t_test(control: SampleMeanStats, variant: SampleMeanStats, confidence: float) -> LiftTest:
    """Welch's two-sided t-test of equal means; CIs for absolute and relative lift use the same df."""
    if control.n < 2 or variant.n < 2:
        return LiftTest(
            _NO_ESTIMATE,
            _NO_ESTIMATE,
            None,
            messages=("Each group needs at least 2 exposed sessions to estimate the value's variance.",),
        )
    if absolute_variance(control, variant) == 0:
        absolute, relative, messages = lift_estimates(
            control, variant, lambda v: 0.0, zero_variance_message(control, variant)  # never called
        )
        return LiftTest(absolute, relative, None, messages=tuple(messages))
    df = welch_degrees_of_freedom(control, variant)
    t_quantile = student_t_ppf(0.5 + confidence / 2.0, df)
    absolute, relative, messages = lift_estimates(
        control, variant, lambda v: t_quantile * math.sqrt(v), zero_variance_message(control, variant)
    )
    t = (variant.mean - control.mean) / math.sqrt(absolute_variance(control, variant))
    return LiftTest(absolute, relative, student_t_two_sided_p(t, df), statistic=t, df=df, messages=tuple(messages))


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone); None entries are skipped and kept None.

    Controls the family-wise error rate across the treatments without assuming independence.
    """
    ranked = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(ranked)
    adjusted: list[float | None] = [None] * len(p_values)
    running_max = 0.0
    for rank, (p, index) in enumerate(ranked):
        running_max = max(running_max, min(1.0, (m - rank) * p))
        adjusted[index] = running_max
    return adjusted


def wilson_interval(converted: int, n: int, confidence: float) -> tuple[float, float, float]:
    """Observed rate with its Wilson score interval (stays inside [0, 1] and behaves at 0 or n)."""
    z = normal_ppf(0.5 + confidence / 2.0)
    rate = converted / n
    z2n = z * z / n
    center = (rate + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(rate * (1.0 - rate) / n + z2n / (4.0 * n))
    return rate, max(0.0, center - half), min(1.0, center + half)
