"""The per-variant sufficient statistics the results endpoint reports and analyses.

Both ways of computing them produce this shape: the raw query over ``abacus.events`` and the
rollup maintained incrementally from the stream (``abacus.rollup_cohort_totals``).
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
    # The metrics' sufficient statistics over the clean sessions (exposed to this variant only),
    # per built-in event type besides impressions: sessions with at least one such event (the
    # binomial metric; for conversions that is ``clean_converted``), and the sums of the
    # per-session counts, of their squares and of the products of every pair (a ratio metric's
    # delta method). Custom event types and a value cap's quantile are not here: they are
    # computed from the events (query_api/metrics/sql.py).
    clean_with_cta_click: int = 0
    clean_with_form_start: int = 0
    clean_with_form_submit: int = 0
    clean_cta_click_sum: int = 0
    clean_cta_click_squares: int = 0
    clean_form_start_sum: int = 0
    clean_form_start_squares: int = 0
    clean_form_submit_sum: int = 0
    clean_form_submit_squares: int = 0
    clean_conversion_sum: int = 0
    clean_conversion_squares: int = 0
    clean_cta_click_x_form_start: int = 0
    clean_cta_click_x_form_submit: int = 0
    clean_cta_click_x_conversion: int = 0
    clean_form_start_x_form_submit: int = 0
    clean_form_start_x_conversion: int = 0
    clean_form_submit_x_conversion: int = 0

    @property
    def conversion_rate(self) -> float:
        return self.exposed_converted / self.exposed_sessions if self.exposed_sessions else 0.0


TOTAL_FIELDS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(VariantRollup))
"""Column order of every totals row, in the raw query, the rollup table and the delta vectors."""

ROLLUP_EVENT_TYPES: tuple[str, ...] = ("cta_click", "form_start", "form_submit", "conversion")
"""The event types whose metrics (binomial and ratio) the totals carry, in their columns' order."""


def event_pairs() -> list[tuple[str, str]]:
    """Every pair of ``ROLLUP_EVENT_TYPES`` in column order: the ``clean_<a>_x_<b>`` columns."""
    kinds = ROLLUP_EVENT_TYPES
    return [(a, b) for i, a in enumerate(kinds) for b in kinds[i + 1 :]]
