"""Exact quantiles of the difference of two Beta posteriors, for the few-conversions regime.

The Cornish-Fisher interval (bayesian.py) is excellent once every posterior parameter is large, but
with a handful of conversions the posteriors are so skewed that at 99.9 % it can miss by more than a
posterior SD. There the quantiles are solved exactly instead:

    P(p_B - p_A <= d) = integral f_N(x) P(W is on the right side of x - d or x + d) dx,

integrating over the *narrower* posterior N (so the wider one's CDF is smooth on the grid) with
Gauss-Legendre panels over its mean +- 20 SD, and Newton steps on d using the density of the
difference, kept inside a bracket, starting from the Cornish-Fisher bounds. Within 3e-4 posterior SD
of scipy quadrature (tested); costs ~10-25 ms per comparison, so it is used only
below EXACT_MAX_PARAMETER.
"""

from __future__ import annotations

import math
from functools import lru_cache

from .distributions import _log_beta_density_front, normal_ppf, regularized_beta

EXACT_MAX_PARAMETER = 100  # below this smallest Beta parameter Cornish-Fisher can be off by > 0.001 SD
_PANELS, _NODES = 4, 10


@lru_cache(maxsize=1)
def _gauss_legendre() -> tuple[tuple[float, float], ...]:
    """Nodes and weights on [-1, 1] by Newton on the Legendre polynomial (computed once, on first use)."""
    n = _NODES
    pairs = []
    for i in range(1, n + 1):
        x = math.cos(math.pi * (i - 0.25) / (n + 0.5))
        for _ in range(100):
            p0, p1 = 1.0, x
            for k in range(2, n + 1):
                p0, p1 = p1, ((2 * k - 1) * x * p1 - (k - 1) * p0) / k
            derivative = n * (x * p1 - p0) / (x * x - 1.0)
            step = p1 / derivative
            x -= step
            if abs(step) < 1e-16:
                break
        pairs.append((x, 2.0 / ((1.0 - x * x) * derivative * derivative)))
    return tuple(pairs)


def _pdf(a: float, b: float, x: float) -> float:
    if not 0.0 < x < 1.0:
        return 0.0
    return math.exp(_log_beta_density_front(a, b, x, 1.0 - x)) / (x * (1.0 - x))


def _cdf(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    return regularized_beta(a, b, x)


def difference_quantiles(
    control: tuple[int, int], variant: tuple[int, int], probabilities: tuple[float, ...], guesses: tuple[float, ...] | None = None
) -> list[float]:
    """Quantiles of p_B - p_A for A ~ Beta(*control), B ~ Beta(*variant); `guesses` start Newton."""
    moments = []
    for a, b in (control, variant):
        s = a + b
        moments.append((a / s, math.sqrt(a * b / (s * s * (s + 1)))))
    (mean_a, sd_a), (mean_b, sd_b) = moments
    # Integrate over the narrower posterior; `sign` turns P(B - A <= d) into the wider one's CDF.
    if sd_b <= sd_a:
        narrow, wide, centre, spread = variant, control, mean_b, sd_b

        def wide_cdf_term(x: float, d: float) -> float:  # P(A >= x - d)
            return 1.0 - _cdf(*wide, x - d)

        def wide_pdf_term(x: float, d: float) -> float:
            return _pdf(*wide, x - d)
    else:
        narrow, wide, centre, spread = control, variant, mean_a, sd_a

        def wide_cdf_term(x: float, d: float) -> float:  # P(B <= x + d)
            return _cdf(*wide, x + d)

        def wide_pdf_term(x: float, d: float) -> float:
            return _pdf(*wide, x + d)

    low, high = max(0.0, centre - 20.0 * spread), min(1.0, centre + 20.0 * spread)
    shift = -1.0 if narrow is variant else 1.0  # the wide variable is x + shift * d

    def grid(d: float) -> list[tuple[float, float]]:
        """Quadrature points, with panel edges where the wide CDF has its kinks (its support's ends)."""
        edges = sorted({low, high, *(k - shift * d for k in (0.0, 1.0) if low < k - shift * d < high)})
        points = []
        for start, end in zip(edges, edges[1:]):
            panels = max(1, round(_PANELS * (end - start) / (high - low)))
            width = (end - start) / panels
            for panel in range(panels):
                middle = start + (panel + 0.5) * width
                for node, weight in _gauss_legendre():
                    x = middle + 0.5 * width * node
                    points.append((x, 0.5 * width * weight * _pdf(*narrow, x)))
        return points

    def cdf(d: float) -> float:
        points = grid(d)
        return sum(w * wide_cdf_term(x, d) for x, w in points) / sum(w for _, w in points)

    def density(d: float) -> float:
        points = grid(d)
        return sum(w * wide_pdf_term(x, d) for x, w in points) / sum(w for _, w in points)

    sd = math.hypot(sd_a, sd_b)
    mean = mean_b - mean_a
    results = []
    for index, p in enumerate(probabilities):
        below, above = -1.0, 1.0
        d = guesses[index] if guesses is not None else mean + sd * normal_ppf(p)
        d = min(max(d, -1.0 + 1e-12), 1.0 - 1e-12)
        for _ in range(60):
            f = cdf(d) - p
            if f < 0:
                below = d
            else:
                above = d
            slope = density(d)
            step = f / slope if slope > 0 else math.inf
            new = d - step
            if not below < new < above:
                new = 0.5 * (below + above)
            if abs(new - d) <= 1e-7 * sd:
                d = new
                break
            d = new
        results.append(d)
    return results
