"""GET /api/v1/experiments/plan: exposed sessions each variant needs to detect a lift."""

from __future__ import annotations

import math

from litestar import get
from litestar.params import FromQuery

from query_api.auth import requires_analyst
from query_api.errors import BadQuery
from query_api.stats.planning import comparison_alpha, sessions_per_variant

MAX_VARIANTS = 26  # as many as a definition may have


def _check(field: str, value: float, low: float, high: float) -> float:
    if not (math.isfinite(value) and low < value < high):
        raise BadQuery(field, f"{field} must be strictly between {low:g} and {high:g}, got {value!r}")
    return value


@get("/api/v1/experiments/plan", guards=[requires_analyst], tags=["results"], summary="Sample size per variant")
async def experiment_plan(
    baseline_rate: FromQuery[float],
    mde: FromQuery[float],
    alpha: FromQuery[float] = 0.05,
    power: FromQuery[float] = 0.8,
    variants: FromQuery[int] = 2,
) -> dict[str, object]:
    """`mde` is the relative lift to detect (0.05 = +5 %, negative for a drop), two-sided test."""
    _check("baseline_rate", baseline_rate, 0.0, 1.0)
    _check("alpha", alpha, 0.0, 1.0)
    _check("power", power, 0.0, 1.0)
    if not 2 <= variants <= MAX_VARIANTS:
        raise BadQuery("variants", f"variants must be between 2 and {MAX_VARIANTS} (the control included)")
    if not math.isfinite(mde) or mde == 0 or not 0.0 < baseline_rate * (1 + mde) < 1.0:
        raise BadQuery("mde", "mde must be a non-zero relative lift with baseline_rate * (1 + mde) strictly between 0 and 1")
    per_variant = sessions_per_variant(baseline_rate, mde, alpha, power, variants)
    return {
        "baseline_rate": baseline_rate,
        "mde": mde,
        "mde_absolute": baseline_rate * mde,
        "alpha": alpha,
        "alpha_per_comparison": comparison_alpha(alpha, variants),
        "power": power,
        "variants": variants,
        "sessions_per_variant": per_variant,
        "total_sessions": per_variant * variants,
        "method": (
            "Two-sided pooled two-proportion z-test, equal allocation, alpha split Bonferroni over the "
            "treatments (statsmodels' samplesize_proportions_2indep_onetail)."
        ),
    }


PLAN_ROUTES = [experiment_plan]
