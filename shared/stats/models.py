"""Sufficient statistics per variant, shaped like GrowthBook's gbstats `models/statistics.py`.

ClickHouse returns, per variant, counts over *exposed sessions* (sessions with an impression of that
variant; sessions seen in several variants are removed upstream). Everything the analysis needs is a
function of these few numbers, so no per-session data ever reaches this package.
"""

from __future__ import annotations

from dataclasses import dataclass


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
        """Sample variance (n - 1 denominator); 0 when undefined (n < 2).

        Clamped at 0 because sum_squares - sum^2/n can come out slightly negative from rounding.
        """
        if self.n < 2:
            return 0.0
        return max(0.0, (self.sum_squares - self.sum * self.sum / self.n) / (self.n - 1))


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


# The results API offers exactly these levels; anything else is a client error (the API maps the
# ValueError to HTTP 400). Restricting them keeps cached/compared results on a few well-known levels.
ALLOWED_CONFIDENCE_LEVELS = (0.90, 0.95, 0.99)


def validate_confidence(confidence: float) -> float:
    """Return the canonical allowed level equal to `confidence`, or raise ValueError."""
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        raise ValueError(f"confidence must be one of {ALLOWED_CONFIDENCE_LEVELS}, got {confidence!r}")
    for level in ALLOWED_CONFIDENCE_LEVELS:
        if abs(confidence - level) < 1e-9:
            return level
    raise ValueError(f"confidence must be one of {ALLOWED_CONFIDENCE_LEVELS}, got {confidence!r}")
