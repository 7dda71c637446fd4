"""The per-variant sufficient statistics the results endpoint reports and analyses.

Both ways of computing them produce this shape: the raw query over ``abacus.events`` and the
rollup maintained incrementally from the stream (``abacus.rollup_day_totals``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class VariantRollup:
    impressions: int = 0
    cta_clicks: int = 0
    form_starts: int = 0
    form_submits: int = 0
    conversions: int = 0
    unique_sessions: int = 0
    exposed_sessions: int = 0
    exposed_converted: int = 0
    value_total: float = 0.0
    clean_exposed: int = 0
    clean_converted: int = 0
    clean_value_sum: float = 0.0
    clean_value_sum_squares: float = 0.0
    multi_variant_share: float = 0.0
    """Sum of 1/k over exposed sessions that saw k > 1 variants: summed across an experiment's
    variants it is the number of such sessions."""

    @property
    def conversion_rate(self) -> float:
        return self.exposed_converted / self.exposed_sessions if self.exposed_sessions else 0.0


TOTAL_FIELDS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(VariantRollup))
"""Column order of every totals row, in the raw query, the rollup table and the delta vectors."""
