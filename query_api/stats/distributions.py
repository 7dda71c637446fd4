"""Distribution functions the analysis needs, in pure Python.

The package must not depend on scipy, so the few special functions it needs are implemented here:
the regularized incomplete beta function (for the Student t distribution) and the regularized
incomplete gamma function (for the chi-square distribution), both by the classic series /
continued-fraction methods (Numerical Recipes, ch. 6.2 and 6.4) evaluated to full double precision.
The test suite checks them against scipy to ~1e-10.
"""

from __future__ import annotations

import math
from statistics import NormalDist

_STANDARD_NORMAL = NormalDist()
_EPS = 1e-16  # relative tolerance of the continued fractions / series
_TINY = 1e-300  # keeps Lentz's algorithm away from division by zero
_MAX_ITERATIONS = 100_000  # continued fractions need O(sqrt(max(a, b))) terms
# Above this many degrees of freedom the t distribution is evaluated by its first-order expansion around
# the normal (error < 1e-12 there) instead of the incomplete beta, whose continued fraction then needs
# thousands of terms and slowly accumulates rounding error.
_T_ASYMPTOTIC_DF = 1e6


def _stirling_correction(x: float) -> float:
    """lgamma(x) minus its Stirling approximation (x - 1/2) log x - x + log(2 pi)/2, for x >= 10."""
    x2 = x * x
    return (1.0 / 12.0 - (1.0 / 360.0 - (1.0 / 1260.0 - (1.0 / 1680.0 - 1.0 / (1188.0 * x2)) / x2) / x2) / x2) / x


def log_gamma_ratio(a: float, b: float) -> float:
    """lgamma(a + b) - lgamma(a), without the cancellation of two huge lgamma values when a is large."""
    if a < 10.0:
        return math.lgamma(a + b) - math.lgamma(a)
    return (a - 0.5) * math.log1p(b / a) + b * math.log(a + b) - b + _stirling_correction(a + b) - _stirling_correction(a)


def log_beta(a: float, b: float) -> float:
    small, big = (a, b) if a <= b else (b, a)
    return math.lgamma(small) - log_gamma_ratio(big, small)


def _log_beta_density_front(a: float, b: float, x: float, y: float) -> float:
    """log(x^a y^b / B(a, b)) with y = 1 - x, well conditioned even when a and b are in the millions.

    The naive a*log(x) + b*log(y) - log B(a, b) subtracts numbers of size ~(a + b) log(a + b) and
    loses about log10(a + b) digits; with Stirling's series the large parts cancel analytically.
    """
    if a >= 10.0 and b >= 10.0:
        d = b * x - a * y  # = (a + b) x - a, the distance from the mode, computed without cancellation
        return (
            a * math.log1p(d / a)
            + b * math.log1p(-d / b)
            + 0.5 * math.log(a * b / (2.0 * math.pi * (a + b)))
            - _stirling_correction(a)
            - _stirling_correction(b)
            + _stirling_correction(a + b)
        )
    log_x = math.log1p(-y) if y < 0.5 else math.log(x)
    log_y = math.log1p(-x) if x < 0.5 else math.log(y)
    return a * log_x + b * log_y - log_beta(a, b)


# --- normal -------------------------------------------------------------------------------------


def normal_cdf(x: float) -> float:
    # erfc rather than 1 + erf keeps relative precision in the far lower tail.
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def normal_sf(x: float) -> float:
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def normal_ppf(p: float) -> float:
    # NormalDist.inv_cdf implements Wichura's AS241, accurate to about 1e-16.
    return _STANDARD_NORMAL.inv_cdf(p)


def normal_two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


# --- incomplete beta and Student t ---------------------------------------------------------------


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction for I_x(a, b) (modified Lentz); converges fast for x < (a+1)/(a+b+2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = _TINY if abs(d) < _TINY else d
    d = 1.0 / d
    h = d
    for m in range(1, _MAX_ITERATIONS + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = _TINY if abs(d) < _TINY else d
        c = 1.0 + aa / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = _TINY if abs(d) < _TINY else d
        c = 1.0 + aa / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def regularized_beta(a: float, b: float, x: float, y: float | None = None) -> float:
    """I_x(a, b), the Beta(a, b) CDF at x. Pass y = 1 - x when it is known more precisely than 1 - x."""
    if y is None:
        y = 1.0 - x
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = _log_beta_density_front(a, b, x, y)
    # Use the continued fraction on the side where it converges quickly; the other side follows from
    # I_x(a, b) = 1 - I_(1-x)(b, a). The directly computed side is the small one in the tails, so
    # tail probabilities keep their relative precision.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, y) / b


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with (possibly fractional) df > 0; df = inf gives the normal."""
    if math.isinf(df):
        return normal_sf(t)
    if df > _T_ASYMPTOTIC_DF and abs(t) < 8.0:
        # F_df(t) = Phi(t) - phi(t) (t^3 + t) / (4 df) + O(df^-2). Far tails keep the incomplete beta,
        # which converges quickly there and keeps relative precision.
        density = math.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
        return normal_sf(t) + density * (t**3 + t) / (4.0 * df)
    t2 = t * t
    # P(|T| > |t|) = I_x(df/2, 1/2) with x = df / (df + t^2); 1 - x is passed exactly.
    tail = 0.5 * regularized_beta(0.5 * df, 0.5, df / (df + t2), t2 / (df + t2))
    return tail if t >= 0 else 1.0 - tail


def student_t_cdf(t: float, df: float) -> float:
    return student_t_sf(-t, df)


def student_t_two_sided_p(t: float, df: float) -> float:
    return min(1.0, 2.0 * student_t_sf(abs(t), df))


def _student_t_log_pdf(t: float, df: float) -> float:
    return log_gamma_ratio(0.5 * df, 0.5) - 0.5 * math.log(df * math.pi) - 0.5 * (df + 1.0) * math.log1p(t * t / df)


def student_t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t: safeguarded Newton iteration on the survival function."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    if math.isinf(df):
        return normal_ppf(p)
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -student_t_ppf(1.0 - p, df)
    q = 1.0 - p  # target upper-tail probability, solve student_t_sf(t) = q for t > 0
    z = normal_ppf(p)
    # Cornish-Fisher start; close enough that Newton usually needs 2-3 steps.
    t = z + (z**3 + z) / (4.0 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96.0 * df * df)
    low, high = 0.0, math.inf
    for _ in range(200):
        sf = student_t_sf(t, df)
        if sf > q:
            low = t
        else:
            high = t
        step = (sf - q) / math.exp(_student_t_log_pdf(t, df))
        new_t = t + step
        # Keep the iterate inside the bracket; heavy tails (small df) can make Newton overshoot.
        if not low < new_t < high:
            new_t = 0.5 * (low + high) if math.isfinite(high) else max(2.0 * t, low + 1.0)
        if abs(new_t - t) <= 1e-14 * max(1.0, abs(t)):
            return new_t
        t = new_t
    return t


# --- incomplete gamma and chi-square -------------------------------------------------------------


def _gamma_series(a: float, x: float) -> float:
    """Lower regularized gamma P(a, x) by its series; use for x < a + 1."""
    term = total = 1.0 / a
    ap = a
    for _ in range(_MAX_ITERATIONS):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_continued_fraction(a: float, x: float) -> float:
    """Upper regularized gamma Q(a, x) by its continued fraction (modified Lentz); use for x >= a + 1."""
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITERATIONS + 1):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def regularized_gamma_q(a: float, x: float) -> float:
    """Upper regularized incomplete gamma Q(a, x) = 1 - P(a, x)."""
    if x <= 0.0:
        return 1.0
    if x < a + 1.0:
        return 1.0 - _gamma_series(a, x)
    return _gamma_continued_fraction(a, x)


def chi_square_sf(x: float, df: int) -> float:
    """P(X > x) for a chi-square variable with df degrees of freedom."""
    return regularized_gamma_q(0.5 * df, 0.5 * x)
