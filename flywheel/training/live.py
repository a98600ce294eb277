"""Champion against challenger on live traffic: the accuracy difference estimated from the
labeled disagreements, and the live gate's verdict. Plain Python and SciPy; no Django.

Where the two models agree they are both right or both wrong, so the accuracy difference
lives only where they disagree:

    D = acc(challenger) - acc(champion) = (1/N) * sum over the N paired predictions of d_i,
    d_i = [challenger right] - [champion right]   (0 wherever they agree).

Disagreements are labeled at random, each with a known probability pi_i (the disagreement
rate it was drawn with, times the share of drawn disagreements labeled so far, since a
drawn one waits in the queue in random order). The Horvitz-Thompson estimate weighs each
labeled disagreement by 1 / pi_i:

    D_hat = (1/N) * sum over labeled disagreements of d_i / pi_i,

unbiased for D. Its standard error treats the paired predictions as independent draws from
live traffic: with Z_i = d_i / pi_i for a labeled disagreement and 0 otherwise,
se = sd(Z) / sqrt(N), and the 95% interval is D_hat +- 1.96 se (normal approximation; the
simulation in tests/flywheel/training/test_live.py checks its coverage)."""

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import norm

from common.policy import Policy

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Difference:
    value: float | None
    low: float | None
    high: float | None
    p_value: float | None
    labeled: int

    def as_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high}


def accuracy_difference(*, paired: int, labeled: Sequence[tuple[int, float]]) -> Difference:
    """D_hat, its 95% interval and the two-sided p-value of D = 0, from `paired` predictions
    both models answered and the labeled disagreements among them as (d_i, pi_i)."""
    if paired < 2 or not labeled:
        return Difference(None, None, None, None, len(labeled))
    weighted = [float(d) / float(pi) for d, pi in labeled]
    value = sum(weighted) / paired
    squares = sum(z * z for z in weighted)
    variance = max(0.0, (squares - paired * value * value) / (paired - 1))
    se = math.sqrt(variance / paired)
    if se == 0.0:
        return Difference(value, value, value, 1.0 if value == 0 else 0.0, len(labeled))
    p_value = float(2 * norm.sf(abs(value) / se))
    return Difference(value, value - Z_95 * se, value + Z_95 * se, p_value, len(labeled))


@dataclass(frozen=True)
class LiveGatePolicy(Policy):
    # When on, a candidate that passes the offline gate goes into shadow beside the champion
    # instead of replacing it, and the live gate decides from production traffic.
    enabled: bool = False
    # Labeled disagreements the live gate needs before it decides either way.
    min_labels: int = 100
    # The challenger is promoted when the difference's lower bound passes this.
    min_improvement: float = 0.0


@dataclass(frozen=True)
class LiveVerdict:
    verdict: str  # better, worse or undecided
    reasons: list[str]


def live_verdict(*, difference: Difference, slices: Sequence[dict], policy: LiveGatePolicy,
                 slice_tolerance: float) -> LiveVerdict:
    """better: enough labels, the lower bound past min_improvement, and no declared slice
    behind the champion by more than the tolerance; worse: the upper bound below zero
    (significantly worse); otherwise undecided."""
    if difference.labeled < policy.min_labels or difference.value is None:
        return LiveVerdict("undecided", [f"{difference.labeled} labeled disagreements of the {policy.min_labels} "
                                         "needed"])
    interval = f"{difference.value:+.4f} [{difference.low:+.4f}, {difference.high:+.4f}]"
    if difference.high < 0:
        return LiveVerdict("worse", [f"significantly worse than the champion: difference {interval}"])
    if difference.low <= policy.min_improvement:
        return LiveVerdict("undecided", [f"difference {interval}: the lower bound does not pass "
                                         f"{policy.min_improvement}"])
    behind = [s for s in slices if s["difference"]["value"] is not None
              and s["difference"]["value"] < -slice_tolerance]
    if behind:
        return LiveVerdict("undecided", [f"better overall ({interval}) but behind the champion on "
                                         f"{s['key']}={s['value']} by {-s['difference']['value']:.4f} "
                                         f"(tolerance {slice_tolerance})" for s in behind])
    return LiveVerdict("better", [f"better than the champion: difference {interval} passes "
                                  f"{policy.min_improvement}", "no declared slice falls behind by more than the "
                                                               "tolerance"])
