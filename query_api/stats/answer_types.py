"""The shape of `analyze_experiment`'s answer, as TypedDicts.

TypedDicts rather than msgspec Structs because this package is stdlib-only (its tests hold it to
that): the builders stay plain dicts that serialise as they always have, type checkers check every
key they write, and the results API's OpenAPI schema (msgspec and Litestar both read TypedDicts)
describes every field. Every number is None where it is undefined, with a `message` saying why.
"""

from typing import Literal, NotRequired, TypedDict


class Interval(TypedDict):
    low: float | None
    high: float | None


class LiftEstimate(TypedDict):
    """A lift and its interval at `interval_confidence`."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None


class BayesianComparison(TypedDict):
    """Beta-binomial comparison of the conversion rates (uniform prior)."""

    chance_to_beat_control: float | None
    expected_loss: float | None
    expected_loss_control: float | None
    credible_interval: Interval
    message: str | None


class MetricComparison(TypedDict):
    """One metric of a treatment against the control.

    `p_value` is the one `significant` uses: Holm-adjusted when there are 2+ treatments (then equal
    to `p_value_adjusted`), else raw. `significant` is true exactly when the interval shown (at
    `interval_confidence`) excludes 0."""

    control: float | None
    variant: float | None
    absolute_lift: LiftEstimate
    relative_lift: LiftEstimate
    statistic: float | None
    df: float | None
    p_value: float | None
    p_value_raw: float | None
    p_value_adjusted: float | None
    significant: bool | None
    interval_confidence: float | None
    interval_adjusted: bool
    message: str | None
    bayesian: NotRequired[BayesianComparison]
    """Only in the conversion-rate block."""


class Comparison(TypedDict):
    """The built-in metrics of a treatment against the control (others: `metric_comparisons`)."""

    conversion_rate: MetricComparison
    value_per_session: MetricComparison


class MinimumDetectableEffect(TypedDict):
    """Conversion-rate difference detectable at `power` with the current sizes, at level `alpha`."""

    absolute: float | None
    relative: float | None
    power: float
    alpha: float


class VariantAnalysis(TypedDict):
    """One variant's rates, verdict and comparison with the control."""

    variant_key: str
    is_control: bool
    allocation: int
    sessions: int
    conversions: int
    conversion_rate: float | None
    conversion_rate_interval: Interval
    value_sum: float | None
    value_per_session: float | None
    status_code: str
    """Stable machine-readable verdict (control, win, loss, no_difference, ...)."""
    status: str
    """The verdict's human label."""
    status_message: str
    minimum_detectable_effect: MinimumDetectableEffect | None
    comparison: Comparison | None
    """None for the control and for a variant that cannot be compared."""
    metrics: dict[str, float | None]
    """The value of every extra metric asked for (by name)."""
    metric_comparisons: dict[str, MetricComparison] | None


class SrmCheck(TypedDict):
    """Pearson chi-square check of the exposed-session split against the allocations."""

    p_value: float | None
    chi_square: float | None
    df: int | None
    flagged: bool
    threshold: float
    min_sessions: int
    observed: dict[str, int]
    expected: dict[str, float]
    excluded_variants: list[str]
    message: str | None
    phase: NotRequired[int]
    """With phase=all: the phase whose check is shown (the worst one)."""


class MultiVariantSessions(TypedDict):
    """Sessions exposed to several variants, left out of every variant."""

    count: int
    share: float
    threshold: float
    flagged: bool
    message: str


class Thresholds(TypedDict):
    min_sessions: int
    min_conversions: int
    srm_p_value: float
    multi_variant_share: float
    mde_power: float


class SequentialTuning(TypedDict):
    """Where the always-valid interval is tuned to be narrowest, and where the number came from."""

    source: str | None
    planned_sessions: float | None
    target_mde: float | None
    planned_sessions_per_comparison: dict[str, float]


class ValueCap(TypedDict):
    """The winsorization of value per session (when the definition sets `value_cap_percentile`)."""

    percentile: float
    cap: float | None
    """The positive session value at that percentile, over every variant (None: no positive value)."""


class Analysis(TypedDict):
    """One experiment's analysis: settings used, warnings (`messages`, `srm`,
    `multi_variant_sessions`) and one row per variant."""

    confidence: float
    sequential: bool
    sequential_planned_sessions: float | None
    sequential_tuning: SequentialTuning | None
    control_variant_key: str | None
    multiple_comparison_correction: str | None
    """"holm" with 2 or more treatments."""
    primary_metric: str
    guardrail_metrics: list[str]
    stratified: bool
    thresholds: Thresholds
    methods: dict[str, str]
    rate_definitions: dict[str, str]
    messages: list[str]
    srm: SrmCheck
    multi_variant_sessions: MultiVariantSessions
    variants: list[VariantAnalysis]
    phase: NotRequired[int | Literal["all"]]
    """The phase analysed (1-based), or "all" (stratified); set by the results endpoint."""
    value_cap: NotRequired[ValueCap]
