"""The plain-language verdict per variant: an enumerated `status_code`, a short `status` label, a sentence.

Order of precedence (the first that applies wins):
1. control / not analyzed (invalid data, no usable control);
2. unreliable: sample ratio mismatch - a flagged SRM means assignment or tracking is broken, so no
   lift can be trusted, however significant;
3. not enough data - fewer than MIN_SESSIONS exposed sessions or MIN_CONVERSIONS conversions in the
   variant or the control;
4. guardrail regression - a guardrail metric is significantly worse, unless the primary metric is
   itself a significant loss (which already says "do not ship");
5. significant win / loss / no detectable difference on the primary metric, exactly as its interval
   (Holm-adjusted when several treatments share the control) excludes 0 or not.
"""

from __future__ import annotations

from enum import Enum


class StatusCode(str, Enum):
    CONTROL = "control"
    NOT_ANALYZED = "not_analyzed"
    UNRELIABLE_SRM = "unreliable_srm"
    NOT_ENOUGH_DATA = "not_enough_data"
    GUARDRAIL_REGRESSION = "guardrail_regression"
    WIN = "win"
    LOSS = "loss"
    NO_DIFFERENCE = "no_difference"


# The `status` labels the results contract has always carried, plus the two new verdicts.
STATUS_LABELS = {
    StatusCode.CONTROL: "control",
    StatusCode.NOT_ANALYZED: "not analyzed",
    StatusCode.UNRELIABLE_SRM: "unreliable: sample ratio mismatch",
    StatusCode.NOT_ENOUGH_DATA: "not enough data",
    StatusCode.GUARDRAIL_REGRESSION: "guardrail regression",
    StatusCode.WIN: "significant win",
    StatusCode.LOSS: "significant loss",
    StatusCode.NO_DIFFERENCE: "no detectable difference",
}

# Below these counts (in the variant or in the control) the verdict is "not enough data": the normal
# approximations behind the tests are unreliable and early results swing wildly. Numbers are still
# reported when they are defined.
MIN_SESSIONS = 100
MIN_CONVERSIONS = 5


def _interval_text(block: dict) -> str:
    low, high = block["absolute_lift"]["ci_low"], block["absolute_lift"]["ci_high"]
    level = block.get("interval_confidence")
    adjusted = "Holm-adjusted " if block.get("interval_adjusted") else ""
    if low is None or high is None or level is None:
        return ""
    return f"{adjusted}{level:.4g} interval of the difference [{low * 100:+.3g}, {high * 100:+.3g}] points"


def verdict(
    control_counts: tuple[int, int],
    variant_counts: tuple[int, int],
    primary: dict,
    guardrails: dict[str, dict],
    srm_flagged: bool,
    metric_label: str = "conversion rate",
) -> tuple[StatusCode, str]:
    """(status_code, sentence) for one treatment with a comparison; counts are (sessions, conversions)."""
    if srm_flagged:
        return StatusCode.UNRELIABLE_SRM, (
            "The session split does not match the allocation (sample ratio mismatch), so this comparison "
            "cannot be trusted whatever it shows; fix assignment or tracking first."
        )
    short = []
    for label, (sessions, conversions) in (("this variant", variant_counts), ("the control", control_counts)):
        if sessions < MIN_SESSIONS or conversions < MIN_CONVERSIONS:
            short.append(f"{label} has {sessions} exposed sessions and {conversions} conversions")
    if short:
        return StatusCode.NOT_ENOUGH_DATA, (
            f"Needs at least {MIN_SESSIONS} exposed sessions and {MIN_CONVERSIONS} conversions in both this "
            f"variant and the control; {' and '.join(short)}."
        )
    worse = [name for name, block in guardrails.items() if block["significant"] and block["absolute_lift"]["estimate"] < 0]
    primary_loss = primary["significant"] and primary["absolute_lift"]["estimate"] < 0
    if worse and not primary_loss:  # a loss already says "do not ship"
        return StatusCode.GUARDRAIL_REGRESSION, (
            f"Guardrail metric(s) {', '.join(worse)} significantly worse than the control's "
            f"({'; '.join(_interval_text(guardrails[name]) for name in worse)}); do not ship on the "
            f"{metric_label} alone."
        )
    if primary["significant"] is None:
        return StatusCode.NOT_ENOUGH_DATA, primary["message"] or f"The {metric_label}s cannot be compared yet."
    kind = "Holm-adjusted p" if primary["p_value_adjusted"] is not None else "p"
    p_text = f"{kind} = {primary['p_value']:.2g}; {_interval_text(primary)}"
    if primary["significant"]:
        lift = primary["absolute_lift"]["estimate"]
        direction = "higher" if lift > 0 else "lower"
        return (StatusCode.WIN if lift > 0 else StatusCode.LOSS), (
            f"The {metric_label} is {direction} than the control's ({p_text}, which excludes 0)."
        )
    return StatusCode.NO_DIFFERENCE, (
        f"No significant difference in {metric_label} from the control ({p_text}, which includes 0); "
        "the true difference may still be anywhere within the interval."
    )
