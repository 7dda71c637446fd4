"""Checks of what `analyze_experiment` is given: the caller's arguments (a ValueError), the
counts (a sentence, never an exception), the control, and the sequential tuning they imply."""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

from .answer_types import SequentialTuning
from .metric_tests import MetricInputs
from .models import ProportionStats, VariantInput
from .planning import sessions_per_variant
from .sequential import DEFAULT_PLANNED_SESSIONS


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_arguments(
    sequential_planned_sessions: float | None,
    planned_sessions: float | None,
    target_mde: float | None,
    power: float,
    stratified: bool,
    sequential: bool,
) -> None:
    """ValueError for an argument the caller chose out of range."""
    for name, value in (("sequential_planned_sessions", sequential_planned_sessions), ("planned_sessions", planned_sessions)):
        if value is not None and not (is_number(value) and value > 0):
            raise ValueError(f"{name} must be a positive number")
    if target_mde is not None and not (is_number(target_mde) and target_mde > 0):
        raise ValueError("target_mde must be a positive relative lift (0.05 = +5%)")
    if not (is_number(power) and 0.5 <= power < 1.0):
        raise ValueError("power must be in [0.5, 1)")
    if stratified and sequential:
        raise ValueError("the stratified all-phases analysis is fixed-horizon: sequential applies to one phase")


def count(value: Any) -> int:
    """A non-negative session count from whatever the caller passed (None, numpy ints, junk -> 0)."""
    if isinstance(value, numbers.Real) and math.isfinite(value) and value > 0:
        return int(value)
    return 0


def find_control(variants: list[VariantInput]) -> tuple[VariantInput | None, str | None]:
    controls = [v for v in variants if v.is_control]
    if not controls:
        return None, "No control variant is defined, so no variant can be compared."
    if len(controls) > 1:
        return None, f"{len(controls)} variants are marked as control; exactly one is needed to compare."
    return controls[0], None


def input_problem(v: VariantInput) -> str | None:
    """Describe counts that cannot come from a correct query (they would yield nonsense numbers)."""
    c, value = v.conversions, v.value
    counts = (c.n, c.converted, value.n)
    if not all(isinstance(x, numbers.Integral) for x in counts) or c.n < 0 or not 0 <= c.converted <= c.n:
        return f"conversions {c.converted!r} of {c.n!r} sessions is impossible"
    totals = (value.sum, value.sum_squares)
    if not all(isinstance(x, numbers.Real) and math.isfinite(x) for x in totals) or value.sum_squares < 0:
        return "the conversion value totals are not finite non-negative numbers"
    if value.n != c.n:
        return f"value statistics cover {value.n!r} sessions but conversions cover {c.n!r}"
    return None


def verdict_counts(v: VariantInput, primary_metric: str, inputs: MetricInputs) -> tuple[int, int]:
    """(sessions, sessions with the primary event) behind the not-enough-data rule; conversions unless
    the primary is another binomial metric."""
    stats = inputs.value_stats(primary_metric, v.variant_key)
    if isinstance(stats, ProportionStats):
        return v.sessions, stats.converted
    return v.sessions, v.conversions.converted


def sequential_tuning(
    control: VariantInput | None,
    compared: Sequence[VariantInput],
    variants: Sequence[VariantInput],
    sequential: bool,
    per_comparison: float | None,
    planned_total: float | None,
    target_mde: float | None,
    alpha: float,
    power: float,
) -> SequentialTuning:
    """Planned sessions of control + each treatment, and where the number came from."""
    planned: dict[str, float] = {}
    source: str | None = "default"
    if per_comparison is not None:
        source = "sequential_planned_sessions"
        planned = {v.variant_key: float(per_comparison) for v in compared}
    elif planned_total is not None:
        source = "planned_sessions"
        weight = sum(max(0, x.allocation) for x in variants) or 1
        control_allocation = max(0, control.allocation) if control is not None else 0  # no control: nothing compared
        for v in compared:
            share = (control_allocation + max(0, v.allocation)) / weight
            # a treatment with 0 % allocation still gets a usable (if meaningless) tuning
            planned[v.variant_key] = max(1.0, planned_total * share) if share > 0 else float(planned_total)
    elif target_mde is not None and control is not None and 0 < control.conversions.mean < 1:
        source = "target_mde"
        for v in compared:
            try:
                planned[v.variant_key] = 2.0 * sessions_per_variant(control.conversions.mean, target_mde, alpha, power)
            except ValueError:
                planned[v.variant_key] = float(DEFAULT_PLANNED_SESSIONS)
    if not planned:
        source = "default" if source != "target_mde" else source
        planned = {v.variant_key: float(DEFAULT_PLANNED_SESSIONS) for v in compared}
    if not sequential:
        source = None
    return {
        "source": source,
        "planned_sessions": planned_total,
        "target_mde": target_mde,
        "planned_sessions_per_comparison": planned,
    }
