"""Beta-binomial comparison of conversion rates.

With a uniform Beta(1, 1) prior each group's conversion rate has the posterior
Beta(1 + converted, 1 + n - converted). For integer Beta parameters P(p_B > p_A) has an exact finite
sum (Evan Miller, "Formulas for Bayesian A/B Testing", 2015):

    P(p_B > p_A) = sum_{i=0}^{alpha_B - 1} B(alpha_A + i, beta_A + beta_B)
                                           / ((beta_B + i) B(1 + i, beta_B) B(alpha_A, beta_A))

The terms are unimodal in i, so we sum outward from the largest term and stop once the untouched
remainder provably cannot matter (each remaining term is smaller than the last one added); that makes
the cost O(sqrt(conversions)) instead of O(conversions) for big experiments. Of the four equivalent
forms (sum over alpha_B, alpha_A, beta_A or beta_B) the one with the fewest terms is used.

Expected loss uses the identity E[p_A 1{p_A > p_B}] = E[p_A] P(A+ > B) with A+ ~ Beta(alpha_A + 1,
beta_A), so it is exact too.

The credible interval of the absolute lift p_B - p_A is the Cornish-Fisher expansion with the exact
first four cumulants of the difference of the two Beta posteriors once every posterior parameter is
at least 100 (within 0.001 posterior SD of the exact quantiles at any confidence up to 0.999 and any n,
1e9 included); below that, where the posteriors are skewed, the quantiles are solved exactly by
quadrature (credible.py).

Chance to beat control and expected loss: the exact sums below while any posterior parameter is under
20,000; above, the Edgeworth expansion (the sums' log-Beta terms carry rounding of ~n * 1e-16 that the
loss amplifies). Both within 1e-8 absolute (chance) and 1e-7 relative (loss) of scipy quadrature from
n = 1e4 to 1e9 (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .credible import EXACT_MAX_PARAMETER, difference_quantiles
from .distributions import log_beta, normal_cdf, normal_ppf
from .models import ProportionStats

PRIOR_ALPHA = 1
PRIOR_BETA = 1
_RELATIVE_TOLERANCE = 1e-17  # stop summing once the remainder is below this fraction of the sum
# From this many conversions *and* non-conversions in both groups, chance and loss come from the
# Edgeworth expansion: the exact sums' log-Beta terms carry rounding of ~n * 1e-16, which the loss
# (a small difference of two large products) amplifies, while the expansion's error shrinks as n^-3/2.
EDGEWORTH_MIN_PARAMETER = 20_000


@dataclass(frozen=True)
class BayesianResult:
    chance_to_beat_control: float | None
    expected_loss: float | None  # E[max(p_control - p_variant, 0)]: what shipping the variant risks
    expected_loss_control: float | None  # E[max(p_variant - p_control, 0)]: what keeping control risks
    credible_low: float | None
    credible_high: float | None
    message: str | None = None


def _log_term(alpha_a: int, beta_a: int, beta_b: int, i: int) -> float:
    return log_beta(alpha_a + i, beta_a + beta_b) - math.log(beta_b + i) - log_beta(1 + i, beta_b) - log_beta(alpha_a, beta_a)


def _miller_sum(alpha_a: int, beta_a: int, alpha_b: int, beta_b: int) -> float:
    """P(B > A) for A ~ Beta(alpha_a, beta_a), B ~ Beta(alpha_b, beta_b), summing over i < alpha_b."""
    n_terms = alpha_b
    s = alpha_a + beta_a + beta_b

    def ratio(i: int) -> float:  # term(i + 1) / term(i)
        return (alpha_a + i) * (beta_b + i) / ((s + i) * (i + 1))

    # ratio(i) >= 1 exactly when i <= (alpha_a * beta_b - s) / (beta_a + 1): the terms rise, then fall.
    peak = math.floor((alpha_a * beta_b - s) / (beta_a + 1)) + 1
    peak = min(max(peak, 0), n_terms - 1)
    # Sum relative to the peak term (scaled to 1), so nothing overflows; underflow to 0 is harmless.
    total = 1.0
    term = 1.0
    for i in range(peak, n_terms - 1):  # forward: the rest is at most term * (terms left)
        term *= ratio(i)
        total += term
        if term * (n_terms - 2 - i) < _RELATIVE_TOLERANCE * total:
            break
    term = 1.0
    for i in range(peak - 1, -1, -1):  # backward: the rest is at most term * i
        term /= ratio(i)
        total += term
        if term * i < _RELATIVE_TOLERANCE * total:
            break
    return math.exp(_log_term(alpha_a, beta_a, beta_b, peak) + math.log(total))


def prob_beta_greater(alpha_a: int, beta_a: int, alpha_b: int, beta_b: int) -> float:
    """P(B > A) for independent A ~ Beta(alpha_a, beta_a) and B ~ Beta(alpha_b, beta_b), integer parameters."""
    # The four forms, keyed by how many terms each needs. q = 1 - p is Beta(beta, alpha) distributed.
    forms = (
        (alpha_b, lambda: _miller_sum(alpha_a, beta_a, alpha_b, beta_b)),
        (alpha_a, lambda: 1.0 - _miller_sum(alpha_b, beta_b, alpha_a, beta_a)),
        (beta_a, lambda: _miller_sum(beta_b, alpha_b, beta_a, alpha_a)),  # P(q_A > q_B)
        (beta_b, lambda: 1.0 - _miller_sum(beta_a, alpha_a, beta_b, alpha_b)),  # 1 - P(q_B > q_A)
    )
    _, compute = min(forms, key=lambda form: form[0])
    return min(1.0, max(0.0, compute()))


def _beta_cumulants(alpha: int, beta: int) -> tuple[float, float, float, float]:
    """Mean, variance, third and fourth cumulant of Beta(alpha, beta)."""
    s = alpha + beta
    mean = alpha / s
    variance = alpha * beta / (s * s * (s + 1))
    skewness = 2.0 * (beta - alpha) * math.sqrt(s + 1) / ((s + 2) * math.sqrt(alpha * beta))
    excess_kurtosis = 6.0 * ((alpha - beta) ** 2 * (s + 1) - alpha * beta * (s + 2)) / (alpha * beta * (s + 2) * (s + 3))
    return mean, variance, skewness * variance**1.5, excess_kurtosis * variance * variance


def _difference_quantiles(control: tuple, variant: tuple, confidence: float) -> tuple[float, float]:
    """Central interval of p_B - p_A by the Cornish-Fisher expansion (cumulants of a difference of
    independent variables: odd ones subtract, even ones add)."""
    mean = variant[0] - control[0]
    variance = variant[1] + control[1]
    sd = math.sqrt(variance)
    g1 = (variant[2] - control[2]) / sd**3
    g2 = (variant[3] + control[3]) / variance**2
    bounds = []
    for p in (0.5 - confidence / 2.0, 0.5 + confidence / 2.0):
        z = normal_ppf(p)
        w = z + (z * z - 1) * g1 / 6 + (z**3 - 3 * z) * g2 / 24 - (2 * z**3 - 5 * z) * g1 * g1 / 36
        bounds.append(min(1.0, max(-1.0, mean + sd * w)))
    if not bounds[0] <= mean <= bounds[1]:
        # The expansion is not monotone for extreme skew (a few sessions); fall back to plain normal.
        z = normal_ppf(0.5 + confidence / 2.0)
        bounds = [max(-1.0, mean - z * sd), min(1.0, mean + z * sd)]
    return bounds[0], bounds[1]


def _edgeworth_chance_and_loss(control: tuple, variant: tuple) -> tuple[float, float]:
    """P(p_B > p_A) and E[max(p_A - p_B, 0)] from the Edgeworth expansion of D = p_B - p_A.

    With t = -mean/sd, the standardised D has CDF Phi(t) - phi(t) [g1/6 He2 + g2/24 He3 + g1^2/72 He5]
    and E[(t - Z)+] = t Phi(t) + phi(t) + phi(t) [g1/6 He1 + g2/24 He2 + g1^2/72 He4] (integrating the
    Hermite terms twice). For large counts the omitted terms are O(n^-3/2), far below the rounding
    the exact sums accumulate there.
    """
    mean = variant[0] - control[0]
    variance = variant[1] + control[1]
    sd = math.sqrt(variance)
    g1 = (variant[2] - control[2]) / sd**3
    g2 = (variant[3] + control[3]) / variance**2
    t = -mean / sd
    density = math.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
    he1, he2, he3 = t, t * t - 1.0, t**3 - 3.0 * t
    he4, he5 = t**4 - 6.0 * t * t + 3.0, t**5 - 10.0 * t**3 + 15.0 * t
    cdf = normal_cdf(t) - density * (g1 / 6.0 * he2 + g2 / 24.0 * he3 + g1 * g1 / 72.0 * he5)
    partial = t * normal_cdf(t) + density * (1.0 + g1 / 6.0 * he1 + g2 / 24.0 * he2 + g1 * g1 / 72.0 * he4)
    return min(1.0, max(0.0, 1.0 - cdf)), max(0.0, sd * partial)


def beta_binomial_comparison(control: ProportionStats, variant: ProportionStats, confidence: float) -> BayesianResult:
    if control.n <= 0 or variant.n <= 0:
        return BayesianResult(None, None, None, None, None, "A group has no exposed sessions yet.")
    alpha_a = PRIOR_ALPHA + control.converted
    beta_a = PRIOR_BETA + control.n - control.converted
    alpha_b = PRIOR_ALPHA + variant.converted
    beta_b = PRIOR_BETA + variant.n - variant.converted
    cumulants_a = _beta_cumulants(alpha_a, beta_a)
    cumulants_b = _beta_cumulants(alpha_b, beta_b)
    mean_a, mean_b = cumulants_a[0], cumulants_b[0]

    if min(alpha_a, beta_a, alpha_b, beta_b) >= EDGEWORTH_MIN_PARAMETER:
        chance, loss_variant = _edgeworth_chance_and_loss(cumulants_a, cumulants_b)
    else:
        chance = prob_beta_greater(alpha_a, beta_a, alpha_b, beta_b)
        # E[max(p_A - p_B, 0)] = E[p_A 1{A > B}] - E[p_B 1{A > B}]
        #                      = mean_A P(A+ > B) - mean_B P(A > B+), with X+ ~ Beta(alpha_X + 1, beta_X).
        a_plus_wins = 1.0 - prob_beta_greater(alpha_a + 1, beta_a, alpha_b, beta_b)
        a_wins_over_b_plus = 1.0 - prob_beta_greater(alpha_a, beta_a, alpha_b + 1, beta_b)
        loss_variant = max(0.0, mean_a * a_plus_wins - mean_b * a_wins_over_b_plus)
    loss_control = max(0.0, (mean_b - mean_a) + loss_variant)  # E[max(x, 0)] = E[x] + E[max(-x, 0)]

    low, high = _difference_quantiles(cumulants_a, cumulants_b, confidence)
    if min(alpha_a, beta_a, alpha_b, beta_b) < EXACT_MAX_PARAMETER:
        probabilities = (0.5 - confidence / 2.0, 0.5 + confidence / 2.0)
        low, high = difference_quantiles((alpha_a, beta_a), (alpha_b, beta_b), probabilities, (low, high))
    return BayesianResult(chance, loss_variant, loss_control, low, high)
