"""The `analysis` and `phases` of one experiment's results, from per-phase sufficient statistics.

Default: the current phase (the last), since it is the only one whose allocations are the
definition's now and so the only one a verdict about "the experiment as it runs" can rest on.
`phase=N` analyses phase N alone; `phase=all` compares within each phase and combines the phases
stratified (`query_api.stats.phases.stratified_comparison`), which keeps the randomisation when the
split and the base rate both changed (pooling them is Simpson's paradox). SRM is always checked
per phase against that phase's allocations.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from query_api.metrics.rows import VariantMetrics
from query_api.results_phases import MetricPlan, add_totals, cohort_start
from query_api.stats import ProportionStats, SampleMeanStats, VariantInput, analyze_experiment
from query_api.stats.answer_types import Analysis
from query_api.stats.phases import Phase, phases_summary
from query_api.stats.ratio import RatioStats
from shared.registry.models import Experiment
from shared.rollup.totals import VariantRollup

ALL_PHASES = "all"


def phase_inputs(
    experiment: Experiment,
    phase: Phase,
    totals: dict[str, VariantRollup],
    metrics: dict[str, VariantMetrics] | None,
) -> list[VariantInput]:
    """One phase's VariantInputs at that phase's allocations. When the metrics query ran, the
    conversions and the (possibly capped) value come from it too, so every number of the analysis
    counts the same sessions."""
    inputs = []
    for variant in experiment.variants:
        allocation = phase.allocations.get(variant.variant_key, 0)
        found = metrics.get(variant.variant_key) if metrics is not None else None
        if metrics is not None:
            n = found.sessions if found else 0
            converted = found.binomial["conversion"].converted if found else 0
            value = (found.capped_value or found.value) if found else SampleMeanStats(0, 0.0, 0.0)
            conversions = ProportionStats(n=n, converted=converted)
        else:
            rollup = totals.get(variant.variant_key, VariantRollup())
            conversions = ProportionStats(n=rollup.clean_exposed, converted=rollup.clean_converted)
            value = SampleMeanStats(
                n=rollup.clean_exposed, sum=rollup.clean_value_sum, sum_squares=rollup.clean_value_sum_squares
            )
        inputs.append(VariantInput(variant.variant_key, variant.is_control, allocation, conversions, value))
    return inputs


def _metric_stats(plan: MetricPlan, name: str, metrics: VariantMetrics | None) -> Any:
    """One variant's statistics of an extra metric; zero sessions when it had none (in this phase)."""
    if "/" in name:
        found = metrics.ratios.get(name) if metrics is not None else None
        return found or RatioStats(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    found = metrics.binomial.get(name) if metrics is not None else None
    return found or ProportionStats(0, 0)


def analyse(
    experiment: Experiment,
    phases: list[Phase],
    totals_by_phase: list[dict[str, VariantRollup]],
    metrics_by_phase: list[dict[str, VariantMetrics]] | None,
    plan: MetricPlan,
    selection: int | str,
    confidence: float,
    sequential: bool,
) -> tuple[list[dict[str, Any]], Analysis]:
    """(phases summary, analysis) for the phase `selection` (0-based) or ALL_PHASES."""
    per_phase = [
        phase_inputs(experiment, phase, totals, metrics_by_phase[i] if metrics_by_phase is not None else None)
        for i, (phase, totals) in enumerate(zip(phases, totals_by_phase))
    ]
    summary = phases_summary(phases, per_phase)
    keys = [v.variant_key for v in experiment.variants]
    common = {
        "confidence": confidence,
        "primary_metric": experiment.primary_metric,
        "guardrail_metrics": experiment.guardrail_metrics,
        "planned_sessions": experiment.planned_sessions,
        "target_mde": experiment.target_mde,
    }
    if selection == ALL_PHASES:
        pooled = [_pooled_input(experiment, [phase[i] for phase in per_phase]) for i in range(len(keys))]
        metrics = {
            name: {key: [_metric_stats(plan, name, (m or {}).get(key)) for m in (metrics_by_phase or [])] for key in keys}
            for name in plan.names
        }
        worst = min(
            summary, key=lambda p: (not p["srm"]["flagged"], p["srm"]["p_value"] if p["srm"]["p_value"] is not None else 2.0)
        )
        srm = {**worst["srm"], "phase": worst["phase"]}
        if srm["flagged"]:
            srm["message"] = f"Phase {worst['phase']}: {srm['message']}"
        multi = sum(round(sum(t.multi_variant_share for t in totals.values())) for totals in totals_by_phase)
        analysis = analyze_experiment(
            pooled,
            metrics=metrics,
            strata={key: [phase[i] for phase in per_phase] for i, key in enumerate(keys)},
            srm_result=srm,
            multi_variant_sessions=multi,
            **common,
        )
        analysis["messages"].insert(0, f"All {len(phases)} phases, compared within each phase and combined stratified by phase.")
    else:
        index = int(selection)
        metrics = {
            name: {key: _metric_stats(plan, name, (metrics_by_phase[index] if metrics_by_phase else {}).get(key)) for key in keys}
            for name in plan.names
        }
        multi = round(sum(t.multi_variant_share for t in totals_by_phase[index].values()))
        analysis = analyze_experiment(
            per_phase[index], metrics=metrics, sequential=sequential, multi_variant_sessions=multi, **common
        )
        if len(phases) > 1:
            analysis["messages"].insert(
                0,
                f"Phase {index + 1} of {len(phases)} (sessions first exposed since {cohort_start(phases[index].start).isoformat()}); "
                "phase=all gives the stratified all-phases analysis.",
            )
    analysis["phase"] = "all" if selection == ALL_PHASES else int(selection) + 1
    if plan.cap_fraction is not None and metrics_by_phase:
        caps = [m.value_cap for phase in metrics_by_phase for m in phase.values() if m.value_cap is not None]
        analysis["value_cap"] = {"percentile": plan.cap_fraction * 100.0, "cap": caps[0] if caps else None}
    return summary, analysis


def _pooled_input(experiment: Experiment, parts: list[VariantInput]) -> VariantInput:
    """One variant's inputs summed over phases, at the current allocation."""
    first = parts[0]
    allocation = next(v.allocation for v in experiment.variants if v.variant_key == first.variant_key)
    return replace(
        first,
        allocation=allocation,
        conversions=ProportionStats(sum(p.conversions.n for p in parts), sum(p.conversions.converted for p in parts)),
        value=SampleMeanStats(
            sum(p.value.n for p in parts), sum(p.value.sum for p in parts), sum(p.value.sum_squares for p in parts)
        ),
    )


__all__ = ["ALL_PHASES", "add_totals", "analyse", "phase_inputs"]
