"""Intervals that agree with their test: each is the set of effects the test does not reject.

Conversion rate, fixed horizon. The p-value is the pooled two-proportion z-test (statsmodels'
`proportions_ztest`). Its intervals are the *score* intervals of Miettinen & Nurminen (1985) without
their n/(n - 1) factor (Mee 1984; statsmodels' `confint_proportions_2indep(method="score",
correction=False)`): the effects delta whose score statistic

    T(delta) = (observed difference - delta) / sqrt(variance at the restricted maximum likelihood
                                                    rates under "difference = delta")

stays within the critical value. At delta = 0 the restricted rates are the pooled rate, so T(0) is the
pooled z statistic: the interval excludes 0 exactly when the z-test rejects. The same holds for the
ratio of the rates (relative lift = ratio - 1), whose score interval is positive, so the relative lift
never goes below -100 %. Both stay sensible at 0 or n conversions, where the Wald interval degenerates.

Means (value per session, sequential intervals): Fieller's interval for the ratio of two independent
means, the set of theta with |mean_b - theta mean_a| <= q sqrt(var_b + theta^2 var_a). At theta = 1
this is the test of the difference with the same multiplier q, so again the relative interval
excludes 0 exactly when the absolute one does.
"""

from __future__ import annotations

import math

from .models import ProportionStats

_BISECTION_STEPS = 200  # far more than the ~60 halvings a double needs; stops early on convergence


def _restricted_rates_for_difference(variant: ProportionStats, control: ProportionStats, delta: float) -> tuple[float, float]:
    """MLE of (p_variant, p_control) subject to p_variant - p_control = delta.

    The log-likelihood is concave in the control rate, so its score equation has one root, found by
    Newton steps kept inside a shrinking bracket. (The closed-form trigonometric solution of the
    Miettinen-Nurminen cubic, as in statsmodels, loses the root to rounding for lopsided arms and then
    returns NaN; the iteration does not.) delta = 0 gives the pooled rate.
    """
    x1, n1, x0, n0 = variant.converted, variant.n, control.converted, control.n
    if delta == 0.0:
        pooled = (x1 + x0) / (n1 + n0)
        return pooled, pooled
    low, high = max(0.0, -delta), min(1.0, 1.0 - delta)
    if high - low <= 1e-300:
        return low + delta, low

    def gradient(p0: float) -> tuple[float, float]:
        p1 = p0 + delta
        g = h = 0.0
        for x, n, p in ((x1, n1, p1), (x0, n0, p0)):
            if x:
                g += x / p
                h -= x / (p * p)
            if n - x:
                g -= (n - x) / (1.0 - p)
                h -= (n - x) / ((1.0 - p) ** 2)
        return g, h

    p0 = min(max((x1 + x0) / (n1 + n0) - delta * n1 / (n1 + n0), low), high)
    if p0 in (low, high):
        p0 = 0.5 * (low + high)
    for _ in range(_BISECTION_STEPS):
        g, h = gradient(p0)
        if g > 0.0:
            low = p0
        else:
            high = p0
        step = p0 - g / h if h < 0.0 else 0.5 * (low + high)
        if not low < step < high or step + delta >= 1.0 or step + delta <= 0.0:
            step = 0.5 * (low + high)
        if step == p0 or high - low <= 4e-16 * max(high, 1e-300):
            break
        p0 = step
    return p0 + delta, p0


def _restricted_rates_for_ratio(variant: ProportionStats, control: ProportionStats, ratio: float) -> tuple[float, float]:
    """MLE of (p_variant, p_control) subject to p_variant = ratio * p_control (Miettinen-Nurminen).

    Root of A p^2 + B p + C = 0 for the control rate with A = N ratio, B = -(n_v ratio + x_v + n_c +
    x_c ratio), C = x_v + x_c.
    """
    x_v, n_v, x_c, n_c = variant.converted, variant.n, control.converted, control.n
    a = (n_v + n_c) * ratio
    b = -(n_v * ratio + x_v + n_c + x_c * ratio)
    c = x_v + x_c
    discriminant = max(0.0, b * b - 4.0 * a * c)
    # The smaller root, in the form that does not cancel (b < 0).
    rate_control = 2.0 * c / (-b + math.sqrt(discriminant)) if c > 0 else 0.0
    rate_control = min(1.0, rate_control)
    return min(1.0, ratio * rate_control), rate_control


def difference_score_statistic(control: ProportionStats, variant: ProportionStats, delta: float) -> float:
    p1, p2 = _restricted_rates_for_difference(variant, control, delta)
    variance = p1 * (1.0 - p1) / variant.n + p2 * (1.0 - p2) / control.n
    excess = variant.mean - control.mean - delta
    if variance <= 0.0:
        return 0.0 if excess == 0.0 else math.copysign(math.inf, excess)
    return excess / math.sqrt(variance)


def ratio_score_statistic(control: ProportionStats, variant: ProportionStats, ratio: float) -> float:
    p1, p2 = _restricted_rates_for_ratio(variant, control, ratio)
    variance = p1 * (1.0 - p1) / variant.n + ratio * ratio * p2 * (1.0 - p2) / control.n
    excess = variant.mean - ratio * control.mean
    if variance <= 0.0:
        return 0.0 if excess == 0.0 else math.copysign(math.inf, excess)
    return excess / math.sqrt(variance)


def _crossing(statistic, inside: float, outside: float, critical: float) -> float:
    """The point between `inside` (|statistic| <= critical) and `outside` where |statistic| = critical.

    Illinois (modified regula falsi) on |statistic| - critical, which is monotone along the segment:
    superlinear like the secant method, but the root always stays bracketed. An infinite statistic
    at `outside` (a rate pushed to 0 or 1) falls back to halving.
    """
    f_in, f_out = abs(statistic(inside)) - critical, abs(statistic(outside)) - critical
    side = 0
    for _ in range(_BISECTION_STEPS):
        if math.isfinite(f_out) and f_out != f_in:
            middle = outside - f_out * (outside - inside) / (f_out - f_in)
            if not min(inside, outside) < middle < max(inside, outside):
                middle = 0.5 * (inside + outside)
        else:
            middle = 0.5 * (inside + outside)
        if middle in (inside, outside) or abs(outside - inside) <= 1e-15 * max(1.0, abs(middle)):
            break
        f_mid = abs(statistic(middle)) - critical
        if f_mid <= 0.0:
            inside, f_in = middle, f_mid
            if side == -1:
                f_out *= 0.5
            side = -1
        else:
            outside, f_out = middle, f_mid
            if side == 1:
                f_in *= 0.5
            side = 1
    return inside


def score_interval_difference(control: ProportionStats, variant: ProportionStats, critical: float) -> tuple[float, float]:
    """Score interval of p_variant - p_control (inside [-1, 1]); `critical` is the z quantile."""
    estimate = variant.mean - control.mean

    def statistic(delta: float) -> float:
        return difference_score_statistic(control, variant, delta)

    # Start the search a little beyond the Wald bound, which is close; else at the end of [-1, 1].
    wald_se = math.sqrt(max(control.variance / control.n + variant.variance / variant.n, 0.25 / (control.n + variant.n)))
    bounds = []
    for end in (-1.0, 1.0):
        guess = estimate + end * 1.5 * critical * wald_se
        outside = guess if -1.0 < guess < 1.0 and abs(statistic(guess)) > critical else end
        if outside == end and abs(statistic(end)) <= critical:
            bounds.append(end)
        else:
            bounds.append(_crossing(statistic, estimate, outside, critical))
    return bounds[0], bounds[1]


def score_interval_ratio(control: ProportionStats, variant: ProportionStats, critical: float) -> tuple[float, float | None]:
    """Score interval of p_variant / p_control (needs a control conversion); None = no upper bound.

    Searched on the log scale, where the ratio's uncertainty is roughly symmetric.
    """
    estimate = variant.mean / control.mean

    def statistic(log_ratio: float) -> float:
        return ratio_score_statistic(control, variant, math.exp(log_ratio))

    centre = math.log(estimate) if estimate > 0 else None
    far = 60.0  # e^60: a bound further out than this is "unbounded" for any real experiment
    if centre is None:
        low = 0.0
        # The variant has no conversion: the interval starts at 0; find the top from a tiny ratio up.
        centre = -far
    else:
        low = 0.0 if abs(statistic(centre - far)) <= critical else math.exp(_crossing(statistic, centre, centre - far, critical))
    high = None if abs(statistic(centre + far)) <= critical else math.exp(_crossing(statistic, centre, centre + far, critical))
    return low, high


def fieller_ratio_interval(
    control_mean: float, control_variance: float, variant_mean: float, variant_variance: float, critical: float
) -> tuple[float | None, float | None]:
    """Fieller's interval for variant_mean / control_mean (variances are those of the two means).

    Returns (None, None) when the control's mean is not distinguishable from 0 at this level (the set
    is then unbounded). The lower end is clamped at 0 when both means are non-negative, because a
    ratio of non-negative quantities cannot be negative.
    """
    q2 = critical * critical
    a = control_mean * control_mean - q2 * control_variance
    if a <= 0.0:
        return None, None
    b = control_mean * variant_mean
    c = variant_mean * variant_mean - q2 * variant_variance
    root = math.sqrt(max(0.0, b * b - a * c))
    low, high = (b - root) / a, (b + root) / a
    if control_mean >= 0.0 and variant_mean >= 0.0:
        low = max(0.0, low)
    return low, high
