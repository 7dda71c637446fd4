"""The fixed sentences of the analysis answer: which method each number comes from, and what the
two conversion rates of the results body mean."""

from __future__ import annotations

METHODS = {
    "conversion_rate": (
        "Pooled two-proportion z-test; absolute and relative lift intervals are the score intervals that "
        "invert it (Mee / Miettinen-Nurminen), so an interval excludes 0 exactly when p < alpha."
    ),
    "conversion_rate_sequential": (
        "Always-valid asymptotic confidence sequence (Waudby-Smith et al. 2023, normal mixture, as in "
        "GrowthBook's sequential testing) with the unpooled variance; p-value = 1 / mixture e-value; "
        "relative lift by Fieller's interval with the same boundary."
    ),
    "bayesian": (
        "Beta-binomial with a uniform Beta(1, 1) prior: chance to beat control and expected loss (exact "
        "sums, Edgeworth expansion for very large counts); credible interval of the absolute lift from "
        "the posteriors' difference (Cornish-Fisher expansion)."
    ),
    "value_per_session": (
        "Welch t-test with Welch-Satterthwaite degrees of freedom, its t interval, and Fieller's interval for the relative lift."
    ),
    "value_per_session_sequential": "Always-valid confidence sequence with the Welch variance; Fieller relative lift.",
    "multiple_comparisons": (
        "Holm-Bonferroni across treatments (per metric) when there are 2 or more treatments; intervals at "
        "Holm's step-down levels, so each excludes 0 exactly when its Holm-adjusted p < alpha."
    ),
    "srm": "Pearson chi-square goodness of fit of exposed sessions against the allocations; a flag makes every verdict unreliable.",
    "minimum_detectable_effect": (
        "Absolute conversion-rate difference detectable with 80% power at the current sizes: "
        "(interval multiplier + z_power) * pooled SE at the control's rate."
    ),
}

RATE_DEFINITIONS = {
    "analysis": (
        "analysis.variants[].conversion_rate: converted / exposed sessions that saw only this variant "
        "(sessions exposed to several variants are left out, as every test here assumes one arm per session)."
    ),
    "results": (
        "variants[].conversion_rate of the results body: converted / exposed sessions of this variant, "
        "including sessions also exposed to another variant (the original API's definition)."
    ),
}


def methods(sequential: bool) -> dict[str, str]:
    """The methods behind the numbers of one answer (fixed-horizon or sequential)."""
    return {
        "conversion_rate": METHODS["conversion_rate_sequential" if sequential else "conversion_rate"],
        "bayesian": METHODS["bayesian"],
        "value_per_session": METHODS["value_per_session_sequential" if sequential else "value_per_session"],
        "multiple_comparisons": METHODS["multiple_comparisons"],
        "srm": METHODS["srm"],
        "minimum_detectable_effect": METHODS["minimum_detectable_effect"],
        "conversion_rate_interval": "Wilson score interval per variant.",
    }
