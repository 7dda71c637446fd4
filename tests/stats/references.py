"""Independent reference implementations (scipy / numpy) for the interval tests."""

import math

import numpy as np
from scipy import optimize


def fieller(mean_a, var_a, mean_b, var_b, q):
    """Fieller's interval for mean_b / mean_a by numpy's polynomial roots, clamped at 0 for non-negative means."""
    a = mean_a**2 - q * q * var_a
    if a <= 0:
        return None, None
    roots = np.sort(np.roots([a, -2 * mean_a * mean_b, mean_b**2 - q * q * var_b]).real)
    low = max(0.0, roots[0]) if mean_a >= 0 and mean_b >= 0 else roots[0]
    return low, roots[1]


def _restricted_control_rate(xa, na, xb, nb, delta):
    """MLE of the control rate under p_b - p_a = delta, by brentq on the score equation."""
    low, high = max(0.0, -delta), min(1.0, 1.0 - delta)

    def score(p0):
        p1 = min(max(p0 + delta, 1e-300), 1 - 1e-16)  # rounding at the ends of the bracket
        p0 = min(max(p0, 1e-300), 1 - 1e-16)
        return xb / p1 - (nb - xb) / (1 - p1) + xa / p0 - (na - xa) / (1 - p0)

    eps = 1e-10 * (high - low)
    return optimize.brentq(score, low + eps, high - eps, xtol=1e-16, rtol=1e-15)


def score_statistic_difference(xa, na, xb, nb, delta):
    p0 = _restricted_control_rate(xa, na, xb, nb, delta)
    p1 = p0 + delta
    return (xb / nb - xa / na - delta) / math.sqrt(p1 * (1 - p1) / nb + p0 * (1 - p0) / na)


def score_interval_difference(xa, na, xb, nb, q):
    """Mee's score interval for p_b - p_a (counts strictly inside (0, n) in both arms)."""
    d = xb / nb - xa / na
    f = lambda delta: abs(score_statistic_difference(xa, na, xb, nb, delta)) - q  # noqa: E731
    edge = 1 - 1e-9
    low = optimize.brentq(f, -edge, d, xtol=1e-15) if f(-edge) > 0 else -1.0
    high = optimize.brentq(f, d, edge, xtol=1e-15) if f(edge) > 0 else 1.0
    return low, high
