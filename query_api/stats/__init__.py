"""Pure-Python statistics for experiment analysis (no I/O, no third-party dependencies).

Entry points: `analyze_experiment` for the results endpoint and `rate_interval` for time series.
"""

from .analysis import analyze_experiment, rate_interval
from .models import (
    MAX_CONFIDENCE,
    MIN_CONFIDENCE,
    ProportionStats,
    SampleMeanStats,
    VariantInput,
    validate_confidence,
)

__all__ = [
    "MAX_CONFIDENCE",
    "MIN_CONFIDENCE",
    "ProportionStats",
    "SampleMeanStats",
    "VariantInput",
    "analyze_experiment",
    "rate_interval",
    "validate_confidence",
]
