"""Ratio metrics (e.g. form_submit per form_start) by the delta method, as gbstats' `RatioStatistic`.

Per exposed session i we have a numerator count N_i and a denominator count D_i; the metric is
sum N / sum D = mean N / mean D. With per-session (co)variances s_N^2, s_D^2, s_ND (n - 1
denominators), the delta method gives the variance of the ratio of means

    Var(R) = (s_N^2 / mu_D^2 - 2 s_ND mu_N / mu_D^3 + s_D^2 mu_N^2 / mu_D^4) / n,

which is gbstats' `RatioStatistic.variance / n`. Two variants are compared by a z-test on the
difference of their ratios with that variance, the matching interval, and Fieller's interval for the
relative lift (agrees with the z-test at ratio 1; never below -100 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .distributions import normal_ppf, normal_two_sided_p
from .frequentist import Estimate, LiftTest
from .intervals import fieller_ratio_interval
from .models import ZERO_VARIANCE_RELATIVE_TOLERANCE


@dataclass(frozen=True)
class RatioStats:
    n: int
    numerator_sum: float
    numerator_sum_squares: float
    denominator_sum: float
    denominator_sum_squares: float
    cross_sum: float

    @property
    def mean(self) -> float:
        return self.numerator_sum / self.denominator_sum if self.denominator_sum else 0.0

    def _covariance(self, sum_x: float, sum_y: float, sum_xy: float) -> float:
        return (sum_xy - sum_x * sum_y / self.n) / (self.n - 1)

    @property
    def mean_variance(self) -> float:
        """Delta-method variance of the ratio estimate (0 when undefined or indistinguishable from 0)."""
        if self.n < 2 or self.denominator_sum <= 0:
            return 0.0
        mu_n, mu_d = self.numerator_sum / self.n, self.denominator_sum / self.n
        var_n = self._covariance(self.numerator_sum, self.numerator_sum, self.numerator_sum_squares)
        var_d = self._covariance(self.denominator_sum, self.denominator_sum, self.denominator_sum_squares)
        cov = self._covariance(self.numerator_sum, self.denominator_sum, self.cross_sum)
        per_unit = var_n / mu_d**2 - 2.0 * cov * mu_n / mu_d**3 + var_d * mu_n**2 / mu_d**4
        scale = self.numerator_sum_squares / self.n / mu_d**2 + self.denominator_sum_squares / self.n * mu_n**2 / mu_d**4
        if per_unit <= ZERO_VARIANCE_RELATIVE_TOLERANCE * scale:
            return 0.0
        return per_unit / self.n


def ratio_test(control: RatioStats, variant: RatioStats, confidence: float) -> LiftTest:
    if control.n < 2 or variant.n < 2 or control.denominator_sum <= 0 or variant.denominator_sum <= 0:
        return LiftTest(
            Estimate(None),
            Estimate(None),
            None,
            messages=("Each group needs 2 exposed sessions and a positive denominator for a ratio metric.",),
        )
    difference = variant.mean - control.mean
    var_c, var_v = control.mean_variance, variant.mean_variance
    lift = difference / control.mean if control.mean > 0 else None
    if var_c + var_v <= 0:
        return LiftTest(Estimate(difference), Estimate(lift), None, messages=("The ratio has zero variance in both groups.",))
    q = normal_ppf(0.5 + confidence / 2.0)
    half = q * math.sqrt(var_c + var_v)
    relative = Estimate(lift)
    messages: tuple[str, ...] = ()
    if lift is not None:
        low, high = fieller_ratio_interval(control.mean, var_c, variant.mean, var_v, q)
        if low is None:
            messages = ("The control's ratio is too uncertain for a bounded relative-lift interval yet.",)
        else:
            relative = Estimate(lift, low - 1.0, high - 1.0)
    z = difference / math.sqrt(var_c + var_v)
    return LiftTest(
        Estimate(difference, difference - half, difference + half),
        relative,
        normal_two_sided_p(z),
        statistic=z,
        messages=messages,
    )
