"""One comparison per metric, whatever its kind: the test is chosen by the sufficient statistics given.

* ProportionStats (a binomial metric: sessions with at least one such event): the pooled z-test
  and its score intervals, as the conversion rate (`two_proportion_z_test`);
* SampleMeanStats (value per session, raw or winsorized): Welch (`welch_t_test`);
* RatioStats (numerator events per denominator event): the delta method (`ratio_test`);
* with `sequential`, the always-valid confidence sequence for all three (a ratio enters it through
  its delta-method variance);
* a list of any of them, one per phase: the stratified comparison (`phases.stratified_comparison`),
  within-phase differences weighted by the phase's share of sessions (a ratio again through its
  delta-method variance).

Each returns the test and the two groups' values (for a list, the phase-weighted values the
stratified difference is the difference of).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

from .frequentist import Estimate, LiftTest, two_proportion_z_test, welch_t_test
from .models import ProportionStats, SampleMeanStats
from .phases import stratified_comparison
from .ratio import RatioStats, ratio_test
from .sequential import sequential_test

MetricStats = Union[ProportionStats, SampleMeanStats, RatioStats]


@dataclass(frozen=True)
class RatioAsMean:
    """A ratio seen by the tests that need only n, mean and variance (variance / n = delta-method variance)."""

    n: int
    mean: float
    variance: float

    @classmethod
    def of(cls, ratio: RatioStats) -> RatioAsMean:
        return cls(ratio.n, ratio.mean, ratio.mean_variance * ratio.n)


def metric_value(stats: MetricStats | None) -> float | None:
    """The metric's value for one group (None without sessions)."""
    if stats is None or stats.n <= 0:
        return None
    if isinstance(stats, RatioStats) and stats.denominator_sum <= 0:
        return None
    return stats.mean


def compare_metric(
    control: MetricStats | Sequence[MetricStats] | None,
    variant: MetricStats | Sequence[MetricStats] | None,
    confidence: float,
    sequential: bool = False,
    planned_sessions: float | None = None,
    tuning_confidence: float | None = None,
) -> tuple[LiftTest, float | None, float | None]:
    """(test, control value, variant value) for one metric of one treatment against the control."""
    if control is None or variant is None:
        missing = LiftTest(Estimate(None), Estimate(None), None, messages=("This metric has no statistics for a group.",))
        return missing, None, None
    if isinstance(control, (list, tuple)) or isinstance(variant, (list, tuple)):
        return _stratified(list(control), list(variant), confidence)  # type: ignore[arg-type]
    if sequential:
        plain_c = RatioAsMean.of(control) if isinstance(control, RatioStats) else control
        plain_v = RatioAsMean.of(variant) if isinstance(variant, RatioStats) else variant  # type: ignore[arg-type]
        test = sequential_test(plain_c, plain_v, confidence, planned_sessions or 5000, tuning_confidence)
    elif isinstance(control, RatioStats):
        test = ratio_test(control, variant, confidence)  # type: ignore[arg-type]
    elif isinstance(control, SampleMeanStats):
        test = welch_t_test(control, variant, confidence)  # type: ignore[arg-type]
    else:
        test = two_proportion_z_test(control, variant, confidence)  # type: ignore[arg-type]
    return test, metric_value(control), metric_value(variant)  # type: ignore[arg-type]


def _stratified(control: list, variant: list, confidence: float) -> tuple[LiftTest, float | None, float | None]:
    plain_c = [RatioAsMean.of(s) if isinstance(s, RatioStats) else s for s in control]
    plain_v = [RatioAsMean.of(s) if isinstance(s, RatioStats) else s for s in variant]
    test = stratified_comparison(plain_c, plain_v, confidence)
    strata = [(c, v) for c, v in zip(plain_c, plain_v) if c.n > 0 and v.n > 0]
    total = sum(c.n + v.n for c, v in strata)
    if not total:
        return test, None, None
    control_value = sum((c.n + v.n) / total * c.mean for c, v in strata)
    variant_value = sum((c.n + v.n) / total * v.mean for c, v in strata)
    return test, control_value, variant_value


# The two metrics every analysis has keep their own blocks (and names) in the answer.
BUILT_IN_BLOCKS = {"conversion": "conversion_rate", "value_per_session": "value_per_session"}


@dataclass(frozen=True)
class MetricInputs:
    """The extra metrics of one analysis and, for the all-phases analysis, the per-phase inputs."""

    metrics: dict[str, Mapping[str, Any]]
    strata: Mapping[str, Sequence[Any]] | None = None

    def value_stats(self, name: str, variant_key: str) -> MetricStats | None:
        """One group's statistics of an extra metric (pooled over phases for the all-phases analysis)."""
        stats = self.metrics.get(name, {}).get(variant_key)
        if isinstance(stats, (list, tuple)):
            return _pooled(stats)
        return stats


def block_of(comparison: dict, name: str) -> dict:
    """A metric's comparison block, by its definition name ("conversion" is the `conversion_rate` block)."""
    if name in BUILT_IN_BLOCKS:
        return comparison[BUILT_IN_BLOCKS[name]]
    if name in comparison:  # block names are accepted too
        return comparison[name]
    return comparison["metrics"][name]


def metric_label(name: str) -> str:
    """How a status sentence names the metric."""
    if name in ("conversion", "conversion_rate"):
        return "conversion rate"
    if name == "value_per_session":
        return "value per session"
    if "/" in name:
        return "{} per {}".format(*name.split("/"))
    return f"rate of sessions with a {name}"


def _pooled(stats: Sequence[MetricStats]) -> MetricStats | None:
    if not stats:
        return None
    first = stats[0]
    if isinstance(first, ProportionStats):
        return ProportionStats(sum(s.n for s in stats), sum(s.converted for s in stats))  # type: ignore[union-attr]
    if isinstance(first, SampleMeanStats):
        return SampleMeanStats(sum(s.n for s in stats), sum(s.sum for s in stats), sum(s.sum_squares for s in stats))  # type: ignore[union-attr]
    return RatioStats(*(sum(getattr(s, f) for s in stats) for f in RatioStats.__dataclass_fields__))
