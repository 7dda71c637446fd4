"""Always-valid ("sequential") intervals and p-values, so results may be checked at any time.

This is the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas,
"Time-uniform central limit theory and asymptotic confidence sequences" (arXiv:2103.06476v7),
i.e. the normal-mixture boundary that GrowthBook documents and implements in gbstats'
`SequentialTwoSidedTTest`; the formulas below follow gbstats 0.8.0 line by line:

* eq. 9 (two-sided boundary), with N = n_control + n_variant and s^2 = N * Var(estimate):
      half width = sqrt(s^2) * sqrt(2 (N rho^2 + 1) / (N rho)^2 * log(sqrt(N rho^2 + 1) / alpha))
* eq. 161: rho = sqrt((-2 log alpha + log(-2 log alpha + 1)) / N_planned) makes the boundary
  tightest when N reaches the planned sample size N_planned (gbstats' `sequential_tuning_parameter`).
* eq. 155: the mixture e-value exp(rho^2 S / (2 (N rho^2 + 1))) / sqrt(N rho^2 + 1), with
  S = estimate^2 * N / Var(estimate); p = min(1, 1 / e-value). p < alpha exactly when the interval
  excludes 0, so `significant` and the interval never disagree.

The guarantee is asymptotic (it relies on the CLT for the running estimate); the simulation tests check
that repeated peeking keeps the false-positive rate below alpha for realistic traffic.
"""

from __future__ import annotations

import math

from .frequentist import Estimate, LiftTest, absolute_variance, lift_estimates, zero_variance_message
from .models import SampleMeanStats

# gbstats' default `sequential_tuning_parameter`: the boundary is tightest at 5000 exposed sessions
# (control + treatment). The price of a poor choice is only some width, never validity.
DEFAULT_PLANNED_SESSIONS = 5000


def mixture_rho(alpha: float, planned_sessions: float) -> float:
    log_alpha = math.log(alpha)
    return math.sqrt((-2.0 * log_alpha + math.log(-2.0 * log_alpha + 1.0)) / planned_sessions)


def sequential_half_width(variance: float, total_n: int, alpha: float, rho: float) -> float:
    """Half width of the confidence sequence for an estimate whose variance is `variance`."""
    tr2p1 = total_n * rho * rho + 1.0
    s2 = variance * total_n
    return math.sqrt(s2) * math.sqrt(2.0 * tr2p1 * math.log(math.sqrt(tr2p1) / alpha) / (total_n * rho) ** 2)


def sequential_p_value(estimate: float, variance: float, total_n: int, rho: float) -> float:
    """Always-valid p-value for H0: effect = 0 (the reciprocal of the normal-mixture e-value)."""
    scaled_square = estimate * estimate * total_n / variance
    tr2p1 = total_n * rho * rho + 1.0
    # Work with log(e-value): for strong effects the e-value itself overflows a float.
    log_e_value = rho * rho * scaled_square / (2.0 * tr2p1) - 0.5 * math.log(tr2p1)
    return math.exp(-log_e_value) if log_e_value > 0 else 1.0


def sequential_test(
    control,
    variant,
    confidence: float,
    planned_sessions: float = DEFAULT_PLANNED_SESSIONS,
    tuning_confidence: float | None = None,
) -> LiftTest:
    """Always-valid comparison of two groups given ProportionStats or SampleMeanStats.

    For conversion rates the variance is the unpooled p(1 - p)/n per group, for values the sample
    variance / n per group, as in gbstats. The p-value tests the absolute difference; the relative
    interval is Fieller's with the boundary's multiplier, so all three agree on significance.

    `tuning_confidence` (default: `confidence`) sets rho. A Holm-adjusted interval is the same
    boundary at a stricter level with rho left at the nominal level: then it excludes 0 exactly when
    p < 1 - confidence, as the p-value is computed with that same rho.
    """
    min_n = 2 if isinstance(control, SampleMeanStats) else 1  # a sample variance needs 2 sessions
    if control.n < min_n or variant.n < min_n:
        return LiftTest(
            Estimate(None), Estimate(None), None, messages=(f"Each group needs at least {min_n} exposed session(s).",)
        )
    alpha = 1.0 - confidence
    rho = mixture_rho(1.0 - (confidence if tuning_confidence is None else tuning_confidence), planned_sessions)
    total_n = control.n + variant.n
    absolute, relative, messages = lift_estimates(
        control, variant, sequential_half_width(1.0, total_n, alpha, rho), zero_variance_message(control, variant)
    )
    variance = absolute_variance(control, variant)
    if variance <= 0:
        return LiftTest(absolute, relative, None, messages=tuple(messages))
    difference = variant.mean - control.mean
    p_value = sequential_p_value(difference, variance, total_n, rho)
    return LiftTest(absolute, relative, p_value, statistic=difference / math.sqrt(variance), messages=tuple(messages))
