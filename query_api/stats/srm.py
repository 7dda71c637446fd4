"""Sample ratio mismatch (SRM): do the exposed-session counts fit the configured allocations?

Pearson's chi-square goodness-of-fit test over the variants with a positive allocation; allocations
are weights (they need not add up to 100). Variants with allocation 0 are left out of the test,
because no expected count can be formed for them (their expected count is 0); any sessions they do
have are reported in the message instead. df = (number of tested variants) - 1, unlike gbstats'
`check_srm`, which also counts the zero-weight variants.

A mismatch is `flagged` only when p < SRM_P_VALUE_THRESHOLD (0.001, GrowthBook's default: the check
runs on every page view, so a strict threshold avoids crying wolf) and the tested variants together
have at least SRM_MIN_SESSIONS exposed sessions (below that one or two sessions swing the p-value).
"""

from __future__ import annotations

from typing import Any, Sequence

from .distributions import chi_square_sf
from .models import VariantInput

SRM_P_VALUE_THRESHOLD = 0.001
SRM_MIN_SESSIONS = 100


def sample_ratio_mismatch(variants: Sequence[VariantInput]) -> dict[str, Any]:
    tested = [v for v in variants if v.allocation > 0]
    untested = [v for v in variants if v.allocation <= 0]
    observed = {v.variant_key: v.sessions for v in tested}
    total = sum(observed.values())
    total_weight = sum(v.allocation for v in tested)
    result: dict[str, Any] = {
        "p_value": None,
        "chi_square": None,
        "df": None,
        "flagged": False,
        "threshold": SRM_P_VALUE_THRESHOLD,
        "min_sessions": SRM_MIN_SESSIONS,
        "observed": observed,
        "expected": {v.variant_key: v.allocation / total_weight * total for v in tested} if total_weight else {},
        "excluded_variants": [v.variant_key for v in untested],
        "message": None,
    }
    notes = []
    stray = sum(max(0, v.sessions) for v in untested)
    if stray:
        notes.append(f"{stray} exposed session(s) landed in variants with 0% allocation; they are not part of this check.")
    if len(tested) < 2:
        notes.insert(0, "Fewer than two variants receive traffic, so there is no split to check.")
    elif total <= 0:
        notes.insert(0, "No exposed sessions yet.")
    else:
        chi_square = sum((observed[key] - expected) ** 2 / expected for key, expected in result["expected"].items())
        df = len(tested) - 1
        p_value = chi_square_sf(chi_square, df)
        result.update(chi_square=chi_square, df=df, p_value=p_value)
        if p_value < SRM_P_VALUE_THRESHOLD and total >= SRM_MIN_SESSIONS:
            result["flagged"] = True
            notes.insert(
                0,
                "Sample ratio mismatch: the session split differs from the configured allocation "
                f"(p = {p_value:.2g}). Assignment or tracking is likely broken; treat results with suspicion.",
            )
        elif total < SRM_MIN_SESSIONS:
            notes.insert(0, f"Too few sessions (fewer than {SRM_MIN_SESSIONS}) to judge the traffic split.")
    result["message"] = " ".join(notes) or None
    return result
