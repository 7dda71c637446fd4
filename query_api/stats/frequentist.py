"""Fixed-horizon frequentist comparisons of one treatment against the control.

Every interval here is the inversion of the test that gives the p-value, so an interval excludes 0
exactly when p < 1 - confidence (see intervals.py):

Conversion rate: two-proportion z-test with the *pooled* standard error (the classic test of
H0: p_control = p_variant, identical to statsmodels' `proportions_ztest` and to the 2x2 chi-square
test without continuity correction). Absolute and relative lift intervals are the matching score
intervals (Mee / Miettinen-Nurminen without the n/(n-1) factor); the relative one is positive, so it
never reaches below -100 %.

Conversion value per exposed session: Welch's unequal-variance t-test with Welch-Satterthwaite degrees
of freedom (identical to scipy's `ttest_ind_from_stats(equal_var=False)` and gbstats' `TwoSidedTTest`),
the t interval of the difference, and Fieller's interval (same t quantile) for the relative lift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .distributions import normal_ppf, normal_two_sided_p, student_t_ppf, student_t_two_sided_p
from .intervals import fieller_ratio_interval, score_interval_difference, score_interval_ratio
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


def lift_estimates(control, variant, multiplier: float | None, zero_variance_text: str) -> tuple[Estimate, Estimate, list[str]]:
    """Absolute lift +- multiplier * SE and Fieller's relative-lift interval with the same multiplier.

    Shared by Welch (t quantile) and the sequential test (the confidence sequence's multiplier), so
    each relative interval excludes 0 exactly when the absolute one does. `multiplier` None: no
    interval (a test that cannot be run). Undefined parts come back as None plus a message.
    """
    messages: list[str] = []
    difference = variant.mean - control.mean
    var_abs = absolute_variance(control, variant)
    if var_abs > 0 and multiplier is not None:
        w = multiplier * math.sqrt(var_abs)
        absolute = Estimate(difference, difference - w, difference + w)
    else:
        absolute = Estimate(difference)
        messages.append(zero_variance_text)
    if control.mean == 0:
        return absolute, _NO_ESTIMATE, messages + ["The control's average is 0, so the relative lift is undefined."]
    lift = difference / control.mean
    if absolute.ci_low is None:
        return absolute, Estimate(lift), messages
    low, high = fieller_ratio_interval(
        control.mean, control.variance / control.n, variant.mean, variant.variance / variant.n, multiplier
    )
    if low is None:
        messages.append("The control's average is too uncertain for a bounded relative-lift interval yet.")
        return absolute, Estimate(lift), messages
    return absolute, Estimate(lift, low - 1.0, high - 1.0), messages


def two_proportion_z_test(control: ProportionStats, variant: ProportionStats, confidence: float) -> LiftTest:
    """Two-sided pooled z-test of equal conversion rates with the score intervals that invert it."""
    if control.n <= 0 or variant.n <= 0:
        return LiftTest(_NO_ESTIMATE, _NO_ESTIMATE, None, messages=("A group has no exposed sessions yet.",))
    difference = variant.mean - control.mean
    lift = difference / control.mean if control.mean > 0 else None
    pooled_rate = (control.converted + variant.converted) / (control.n + variant.n)
    pooled_se = math.sqrt(pooled_rate * (1.0 - pooled_rate) * (1.0 / control.n + 1.0 / variant.n))
    messages = [] if control.mean > 0 else ["The control's average is 0, so the relative lift is undefined."]
    if pooled_se == 0:
        messages.insert(0, zero_variance_message(control, variant))
        return LiftTest(Estimate(difference), Estimate(lift), None, messages=tuple(messages))
    z_quantile = normal_ppf(0.5 + confidence / 2.0)
    low, high = score_interval_difference(control, variant, z_quantile)
    absolute = Estimate(difference, low, high)
    relative = Estimate(lift)
    if lift is not None:
        ratio_low, ratio_high = score_interval_ratio(control, variant, z_quantile)
        relative = Estimate(lift, ratio_low - 1.0, None if ratio_high is None else ratio_high - 1.0)
    z = difference / pooled_se
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
        absolute, relative, messages = lift_estimates(control, variant, None, zero_variance_message(control, variant))
        return LiftTest(absolute, relative, None, messages=tuple(messages))
    df = welch_degrees_of_freedom(control, variant)
    t_quantile = student_t_ppf(0.5 + confidence / 2.0, df)
    absolute, relative, messages = lift_estimates(control, variant, t_quantile, zero_variance_message(control, variant))
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
