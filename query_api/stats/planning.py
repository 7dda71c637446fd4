"""Sample size and minimum detectable effect for the two-proportion z-test.

Sessions per variant follow statsmodels' `samplesize_proportions_2indep_onetail` (two-sided): the
pooled variance under H0 and the unpooled one under the alternative,

    n = ((z_{1 - alpha/2} sd_null + z_power sd_alt) / diff)^2,
    sd_null = sqrt(2 p_bar (1 - p_bar)),  sd_alt = sqrt(p1 (1 - p1) + p0 (1 - p0)),

with equal allocation. With k variants (k - 1 treatments against the control) alpha is split
Bonferroni-style over the k - 1 comparisons, a slightly conservative stand-in for the Holm correction
the analysis applies.

The minimum detectable effect at a given size is the normal-approximation inverse: the absolute
difference a test with interval multiplier q (z quantile, or the sequential boundary's) detects with
probability `power`: (q + z_power) * sqrt(p (1 - p) (1/n_control + 1/n_variant)).
"""

from __future__ import annotations

import math

from .distributions import normal_ppf

DEFAULT_POWER = 0.8


def comparison_alpha(alpha: float, variants: int) -> float:
    """The per-comparison level for `variants` arms (control included), Bonferroni over treatments."""
    return alpha / max(1, variants - 1)


def sessions_per_variant(baseline_rate: float, relative_mde: float, alpha: float, power: float, variants: int = 2) -> int:
    """Exposed sessions each variant needs to detect a relative lift of `relative_mde` (ValueError if impossible)."""
    if not 0.0 < baseline_rate < 1.0:
        raise ValueError("baseline_rate must be strictly between 0 and 1")
    treated_rate = baseline_rate * (1.0 + relative_mde)
    if relative_mde == 0.0 or not 0.0 < treated_rate < 1.0:
        raise ValueError("mde must be non-zero and keep baseline_rate * (1 + mde) strictly between 0 and 1")
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise ValueError("alpha and power must be strictly between 0 and 1")
    if variants < 2:
        raise ValueError("variants must be at least 2 (the control and one treatment)")
    level = comparison_alpha(alpha, variants)
    mean_rate = 0.5 * (baseline_rate + treated_rate)
    sd_null = math.sqrt(2.0 * mean_rate * (1.0 - mean_rate))
    sd_alt = math.sqrt(baseline_rate * (1.0 - baseline_rate) + treated_rate * (1.0 - treated_rate))
    crit = normal_ppf(1.0 - level / 2.0)
    crit_power = normal_ppf(power)
    n = ((crit * sd_null + crit_power * sd_alt) / (treated_rate - baseline_rate)) ** 2
    return math.ceil(n - 1e-9)


def minimum_detectable_effect(
    baseline_rate: float, n_control: int, n_variant: int, multiplier: float, power: float = DEFAULT_POWER
) -> float | None:
    """Smallest absolute difference in rate detectable with `power` at these sizes; None if undefined."""
    if n_control <= 0 or n_variant <= 0 or not 0.0 < baseline_rate < 1.0:
        return None
    se = math.sqrt(baseline_rate * (1.0 - baseline_rate) * (1.0 / n_control + 1.0 / n_variant))
    return (multiplier + normal_ppf(power)) * se
