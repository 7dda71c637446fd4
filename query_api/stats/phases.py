"""Phases: every change of allocations starts a new phase; SRM per phase; a stratified comparison.

Why: when the split changes mid-run (50/50, then 20/80) while the base rate drifts, pooling the
phases compares arms observed at different times in different proportions (Simpson's paradox), and
an SRM check against the *current* allocations flags the earlier phase's honest traffic. Each phase
is a separate randomised experiment; comparing within phases and then averaging keeps the
randomisation.

Default analysis: the current phase (the only one whose allocation is the definition's now, and
whose SRM check is meaningful against it). The all-phases alternative is `stratified_comparison`:
the difference of rates within each phase, weighted by the phase's share of the sessions compared,

    d = sum_k w_k (p_variant,k - p_control,k),   Var d = sum_k w_k^2 (p_c,k (1 - p_c,k) / n_c,k + p_v,k (1 - p_v,k) / n_v,k),

with a Wald z-test and the matching interval (they agree), and Fieller's interval for the ratio of
the weighted rates (agrees with the z-test at ratio 1; never below -100 %). With one phase it is the
unpooled two-proportion Wald test (statsmodels' `test_proportions_2indep(method="wald")`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Sequence

from .distributions import normal_ppf, normal_two_sided_p
from .frequentist import Estimate, LiftTest
from .intervals import fieller_ratio_interval
from .models import ProportionStats, VariantInput
from .srm import sample_ratio_mismatch


@dataclass(frozen=True)
class Phase:
    number: int  # 1-based
    start: datetime
    end: datetime | None  # None: the current phase
    allocations: dict[str, int]


def split_phases(history: Sequence[Any]) -> list[Phase]:
    """Phases from a definition history (registry `HistoryEntry`s: `changed_at`, `definition.variants`).

    A new phase starts at each entry whose variant allocations differ from the phase before; edits
    that keep the allocations (a label, a route, archiving) stay in the same phase.
    """
    phases: list[Phase] = []
    for entry in sorted(history, key=lambda e: (e.changed_at, getattr(e, "version", 0))):
        allocations = {v.variant_key: v.allocation for v in entry.definition.variants}
        if phases and phases[-1].allocations == allocations:
            continue
        if phases:
            phases[-1] = replace(phases[-1], end=entry.changed_at)
        phases.append(Phase(len(phases) + 1, entry.changed_at, None, allocations))
    return phases


def phase_srm(phase: Phase, variants: Sequence[VariantInput]) -> dict[str, Any]:
    """The SRM check of one phase's exposed sessions against that phase's allocations."""
    return sample_ratio_mismatch([replace(v, allocation=phase.allocations.get(v.variant_key, 0)) for v in variants])


def phases_summary(phases: Sequence[Phase], variants_by_phase: Sequence[Sequence[VariantInput]]) -> list[dict[str, Any]]:
    """JSON-ready list of phases with their dates, allocations, sessions and SRM check."""
    return [
        {
            "phase": phase.number,
            "start": phase.start.isoformat(),
            "end": phase.end.isoformat() if phase.end else None,
            "allocations": dict(phase.allocations),
            "sessions": {v.variant_key: v.sessions for v in variants},
            "srm": phase_srm(phase, variants),
        }
        for phase, variants in zip(phases, variants_by_phase)
    ]


def stratified_comparison(
    control_by_phase: Sequence[ProportionStats], variant_by_phase: Sequence[ProportionStats], confidence: float
) -> LiftTest:
    """All-phases comparison of conversion rates, stratified by phase (see the module docstring)."""
    strata = [(c, v) for c, v in zip(control_by_phase, variant_by_phase) if c.n > 0 and v.n > 0]
    if not strata:
        return LiftTest(Estimate(None), Estimate(None), None, messages=("No phase has sessions in both groups.",))
    total = sum(c.n + v.n for c, v in strata)
    weights = [(c.n + v.n) / total for c, v in strata]
    control_rate = sum(w * c.mean for w, (c, _) in zip(weights, strata))
    variant_rate = sum(w * v.mean for w, (_, v) in zip(weights, strata))
    control_var = sum(w * w * c.variance / c.n for w, (c, _) in zip(weights, strata))
    variant_var = sum(w * w * v.variance / v.n for w, (_, v) in zip(weights, strata))
    difference = variant_rate - control_rate
    variance = control_var + variant_var
    lift = difference / control_rate if control_rate > 0 else None
    if variance <= 0:
        return LiftTest(
            Estimate(difference), Estimate(lift), None, messages=("No variation within any phase, so nothing can be tested.",)
        )
    q = normal_ppf(0.5 + confidence / 2.0)
    half = q * math.sqrt(variance)
    relative = Estimate(lift)
    messages: tuple[str, ...] = ()
    if lift is not None:
        low, high = fieller_ratio_interval(control_rate, control_var, variant_rate, variant_var, q)
        if low is None:
            messages = ("The control's rate is too uncertain for a bounded relative-lift interval yet.",)
        else:
            relative = Estimate(lift, low - 1.0, high - 1.0)
    z = difference / math.sqrt(variance)
    return LiftTest(
        Estimate(difference, difference - half, difference + half),
        relative,
        normal_two_sided_p(z),
        statistic=z,
        messages=messages,
    )
