"""Sufficient statistics per variant, shaped like GrowthBook's gbstats `models/statistics.py`.

ClickHouse returns, per variant, counts over *exposed sessions* (sessions with an impression of that
variant; sessions seen in several variants are removed upstream). Everything the analysis needs is a
function of these few numbers, so no per-session data ever reaches this package.
"""

from __future__ import annotations

from dataclasses import dataclass

# Relative size of the centred sum of squares below which a value metric counts as constant; well
# above the rounding error of summing a billion doubles (~1e-16 * n in the worst case is rare;
# ClickHouse's pairwise-ish sums stay far below 1e-9).
ZERO_VARIANCE_RELATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class ProportionStats:
    """A 0/1 outcome per unit: `converted` of `n` exposed sessions had at least one conversion."""

    n: int
    converted: int

    @property
    def mean(self) -> float:
        return self.converted / self.n if self.n > 0 else 0.0

    @property
    def variance(self) -> float:
        # Bernoulli variance p(1 - p) without the n/(n - 1) factor, as gbstats' ProportionStatistic,
        # so standard errors match gbstats and the textbook unpooled two-proportion SE.
        p = self.mean
        return p * (1.0 - p)


@dataclass(frozen=True)
class SampleMeanStats:
    """A numeric outcome per unit, summarised by its count, sum and sum of squares."""

    n: int
    sum: float
    sum_squares: float

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n > 0 else 0.0

    @property
    def variance(self) -> float:
        """Sample variance (n - 1 denominator); 0 when undefined (n < 2) or indistinguishable from 0.

        sum_squares - sum^2/n cancels catastrophically when every value is (nearly) the same: all
        values 0.1 leave rounding noise of ~1e-17 * sum_squares, which an exact `== 0` would take for
        real spread. So a centred sum of squares below ZERO_VARIANCE_RELATIVE_TOLERANCE * sum_squares
        counts as zero variance (a coefficient of variation below ~3e-5 is not measurable this way).
        """
        if self.n < 2:
            return 0.0
        centred = self.sum_squares - self.sum * self.sum / self.n
        if centred <= ZERO_VARIANCE_RELATIVE_TOLERANCE * self.sum_squares:
            return 0.0
        return centred / (self.n - 1)


@dataclass(frozen=True)
class VariantInput:
    """One row of the per-variant ClickHouse aggregate.

    `conversions.n` and `value.n` are both the number of exposed sessions; `value.sum` is the total
    conversion value and `value.sum_squares` the sum over sessions of (session's total value)^2.
    `allocation` is the configured traffic share in percent (0 for a variant that gets no traffic).
    """

    variant_key: str
    is_control: bool
    allocation: int
    conversions: ProportionStats
    value: SampleMeanStats

    @property
    def sessions(self) -> int:
        return self.conversions.n


# Any confidence level in this closed range is accepted (the API maps the ValueError to HTTP 400).
# Below 0.5 an "interval" covers less often than not; above 0.999 the normal approximations behind
# the intervals are no longer trustworthy in the far tails.
MIN_CONFIDENCE = 0.5
MAX_CONFIDENCE = 0.999


def validate_confidence(confidence: float) -> float:
    """Return `confidence` as a float if it lies in [MIN_CONFIDENCE, MAX_CONFIDENCE], else raise ValueError."""
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, (int, float))
        or not MIN_CONFIDENCE <= confidence <= MAX_CONFIDENCE
    ):
        raise ValueError(f"confidence must be a number between {MIN_CONFIDENCE} and {MAX_CONFIDENCE}, got {confidence!r}")
    return float(confidence)
