"""The typed answers of the results routes (so the OpenAPI schema is the real one)."""

from __future__ import annotations

from typing import Literal

import msgspec

from query_api.stats.answer_types import Analysis


class VariantCounts(msgspec.Struct):
    """Exactly the nine keys the original API returned per variant, in its order."""

    variant_key: str
    impressions: int
    cta_clicks: int
    form_starts: int
    form_submits: int
    conversions: int
    unique_sessions: int
    conversion_rate: float
    conversion_value_total: float


class PhaseSrm(msgspec.Struct):
    """The phase's sample-ratio check against its own allocations (see `analysis.srm` for the keys)."""

    p_value: float | None
    flagged: bool
    message: str | None = None
    chi_square: float | None = None
    df: int | None = None
    threshold: float | None = None
    min_sessions: int | None = None
    observed: dict[str, int] | None = None
    expected: dict[str, float] | None = None
    excluded_variants: list[str] | None = None


class PhaseSummary(msgspec.Struct):
    """One phase: a span of the definition history with the same allocations."""

    phase: int
    """1-based; the last one is the current phase."""
    start: str
    """When the definition got these allocations (sessions first exposed earlier count in phase 1)."""
    end: str | None
    """When the next phase started (None: the current phase)."""
    allocations: dict[str, int]
    sessions: dict[str, int]
    """Exposed sessions first exposed in this phase that saw only that variant."""
    srm: PhaseSrm


Source = Literal["rollup", "events", "rollup+events"]


class ResultsFreshness(msgspec.Struct):
    """Where this experiment's numbers came from, and what the rollup had not folded yet."""

    counts_source: Source
    """Of `variants` and `phases` (the rollup's per-day totals; "rollup+events" when a day a phase
    starts in was grouped from the events)."""
    analysis_source: Source
    """Of `analysis`: the events whenever a metric beyond the rollup's is computed (another event
    type, a ratio, a capped value), since the rollup keeps no such statistics."""
    behind: bool
    """True when some number came from a rollup that had not folded every stored event."""
    unfolded_events: int
    """As X-Abacus-Unfolded-Events: measured over all the experiments of the request, together."""
    behind_ms: int
    message: str | None = None


class ExperimentResults(msgspec.Struct, kw_only=True):
    experiment_key: str
    name: str
    enabled: bool
    archived: bool
    version: int
    from_: str | None = msgspec.field(name="from")
    """The window's start: the sessions first exposed at or after it (None: all time)."""
    to: str | None
    """The window's end (exclusive)."""
    variants: list[VariantCounts]
    analysis: Analysis
    phases: list[PhaseSummary] = []
    """Every phase of the definition history, with its allocations and its own SRM check."""
    analysis_phase: int | Literal["all"] = 1
    """The phase `analysis` covers (the current one unless `phase=` says otherwise), or "all"."""
    freshness: ResultsFreshness
    """Where the counts and the analysis came from and what the rollup had not folded yet."""


class TimePoint(msgspec.Struct):
    bucket: str
    """Start of the day (or hour) of first exposure; the counts are cumulative up to its end."""
    exposed_sessions: int
    converted_sessions: int
    conversion_rate: float | None
    ci_low: float | None
    ci_high: float | None


class VariantSeries(msgspec.Struct):
    variant_key: str
    is_control: bool
    points: list[TimePoint]


class Timeseries(msgspec.Struct):
    experiment_key: str
    interval: str
    confidence: float
    variants: list[VariantSeries]
    phase: int | Literal["all"] = 1
    """The phase whose sessions the series follows (as `phase=` chose; the current one by default)."""
