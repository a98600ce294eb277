"""Routing: which predictions a person should look at, and in what order. Plain Python over
numbers, no Django (the multivariate outliers are scored by monitoring.stats, in NumPy)."""

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from common.policy import Policy
from monitoring import stats as monitoring_stats

UNCERTAINTY_METHODS = ("least_confidence", "margin", "entropy")


class Reason:
    """Why a task is in the queue (labeling.Task.reason) or why a prediction is not."""

    LOW_CONFIDENCE = "low_confidence"
    AUDIT = "audit"
    FEEDBACK_CONFLICT = "feedback_conflict"
    FEEDBACK_REJECT = "feedback_reject"
    DRIFT = "drift"
    GOLD = "gold"
    # A shadow model disagreed with the champion on it (flywheel.ingest.shadow).
    DISAGREEMENT = "disagreement"
    # Not routed:
    CONFIDENT = "confident"
    BUDGET_EXHAUSTED = "budget_exhausted"
    # Shadow predictions: agreeing with the champion, or a disagreement not routed, and why:
    AGREES = "agrees"
    NOT_DRAWN = "not_drawn"
    LABELED = "labeled"


@dataclass(frozen=True)
class RoutingPolicy(Policy):
    uncertainty: str = "least_confidence"
    # Route when the uncertainty score (0 = certain, 1 = as unsure as it gets) reaches this.
    threshold: float = 0.3
    # Share of all predictions sent to the queue at random, whatever their confidence: the
    # unbiased sample production accuracy is estimated from.
    audit_rate: float = 0.02
    # Uncertainty- and disagreement-routed tasks per UTC day; past it only the audit sample
    # is routed.
    daily_budget: int = 1000
    annotations_per_task: int = 1
    # When a new champion takes over, open uncertainty-routed tasks scored by an earlier
    # model go behind the ones it scores itself: what puzzled a retired model is often
    # settled by the labels that trained its successor.
    demote_stale: bool = True
    # When end users' feedback resolves a prediction's label (as the feedback policy trusts
    # it), its open uncertainty-routed task is canceled: a person would only label again
    # what is already known. Audit tasks stay, or the audit sample would lose exactly the
    # predictions end users found wrong and overstate accuracy.
    skip_resolved: bool = True
    # Share of the predictions a shadow model disagrees with the champion on that are
    # routed (reason disagreement), within the daily budget: the labels that decide
    # between the two, since their accuracies differ only where they disagree.
    disagreement_rate: float = 1.0


@dataclass(frozen=True, slots=True)
class Uncertainty:
    least_confidence: float
    margin: float
    entropy: float

    def score(self, method: str) -> float:
        return getattr(self, method)


def uncertainty(confidence: float, probabilities: Mapping[str, float] | None, n_labels: int) -> Uncertainty:
    """The three classic uncertainty scores, each in [0, 1], higher meaning less sure.

    - least confidence: 1 - p(top label)
    - margin: 1 - (p(top) - p(runner-up))
    - entropy: Shannon entropy of the distribution divided by log(number of labels)

    Without `probabilities` only the top label's confidence is known; the remaining mass is
    then placed the way that is most uncertain and still consistent with it: margin puts it
    on one runner-up, entropy spreads it evenly over the other labels.
    """
    n_labels = max(n_labels, 2)
    if probabilities:
        ranked = sorted(probabilities.values(), reverse=True)
        top = ranked[0]
        runner_up = ranked[1] if len(ranked) > 1 else 0.0
        entropy = -sum(p * math.log(p) for p in ranked if p > 0.0)
    else:
        top = confidence
        rest = max(0.0, 1.0 - top)
        runner_up = min(rest, top)
        entropy = -top * math.log(top) if top > 0.0 else 0.0
        if rest > 0.0:
            each = rest / (n_labels - 1)
            entropy -= rest * math.log(each)
    least_confidence = 1.0 - top
    margin = 1.0 - (top - runner_up)
    entropy = entropy / math.log(n_labels)
    return Uncertainty(
        least_confidence=_unit(least_confidence), margin=_unit(margin), entropy=_unit(entropy)
    )


def _unit(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


def audit_draw(salt: str, prediction_id: str) -> float:
    """A uniform number in [0, 1) fixed by the prediction id: a retried request makes the
    same audit decision, and the sample is independent of confidence and correctness."""
    digest = hashlib.blake2b(prediction_id.encode(), key=salt.encode()[:64], digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def disagreement_draw(salt: str, prediction_id: str) -> float:
    """The disagreement route's own uniform draw for a prediction, independent of its audit
    draw (another key): whichever shadow disagrees first, and however often, a prediction
    is drawn once, with the same outcome."""
    return audit_draw(salt, "disagreement\x00" + prediction_id)


def disagreement_priority(draw: float, rate: float) -> float:
    """Disagreement tasks go with the audit sample, ahead of uncertainty-routed ones, and in
    a random order among themselves (the draw, spread over the rate): a sample of
    disagreements that is labeled only in part is then still a random sample of them,
    where ordering by the champion's uncertainty would bias the estimate of the accuracy
    difference toward the inputs it found hard."""
    return 1.0 + (draw / rate if rate > 0 else 0.0)


def task_priority(reason: str, uncertainty_score: float) -> float:
    """Queue order: larger first. Audit tasks go ahead of uncertainty-routed ones because an
    audit sample that is only partly labeled biases the accuracy estimate toward whatever
    got labeled; within each group the most uncertain come first."""
    if reason in (Reason.AUDIT, Reason.GOLD):
        return 1.0 + uncertainty_score
    if reason in (Reason.FEEDBACK_CONFLICT, Reason.FEEDBACK_REJECT, Reason.DRIFT):
        return 0.5 + uncertainty_score / 2
    return uncertainty_score


# What a new champion takes off the priority of open tasks an earlier model routed by its
# uncertainty (RoutingPolicy.demote_stale). Those priorities lie in [0, 1], so one puts a
# stale task behind every task the current champion routed, and each later champion pushes
# it back again: stale tasks are served newest model first.
STALE_DEMOTION = 1.0


@dataclass(frozen=True)
class DriftResponse:
    """What an open drift alert asks of routing (monitoring's alert actions, the drift
    policy's on_drift): a raised random draw, the regions that grew, and the model that
    tells multivariate outliers (monitoring.stats.outlier_model) when joint drift is open."""

    boost_audit_rate: float = 0.0
    regions: tuple = ()
    outlier_model: Mapping | None = None

    @classmethod
    def from_actions(cls, actions: Mapping | None) -> "DriftResponse":
        actions = actions or {}
        routes = bool(actions.get("route_drifted"))
        return cls(boost_audit_rate=float(actions.get("boost_audit_rate") or 0.0),
                   regions=tuple(actions.get("regions") or ()) if routes else (),
                   outlier_model=actions.get("outlier_model") if routes else None)

    @property
    def active(self) -> bool:
        return self.boost_audit_rate > 0 or bool(self.regions) or self.outlier_model is not None

    def boosted(self, draw: float, audit_rate: float) -> bool:
        """Drawn by the raised rate but not by the routing policy's own: these draws are
        routed with reason drift and kept out of the audit sample (Prediction.audit), which
        stays a uniform sample over time, so accuracy estimated from it stays unbiased."""
        return audit_rate <= draw < self.boost_audit_rate

    def in_region(self, features: Mapping | None) -> bool:
        return self.in_regions([features])[0]

    def in_regions(self, features: Sequence[Mapping | None]) -> list[bool]:
        """Per prediction, whether it falls in a region that grew or is a multivariate
        outlier of the reference: what route_drifted routes with reason drift."""
        found = [bool(self.regions) and in_drift_region(f, self.regions) for f in features]
        if self.outlier_model is not None and features:
            rows = outlier_rows(features, self.outlier_model["features"])
            outlying = monitoring_stats.outliers(self.outlier_model, rows)
            found = [region or bool(outlier) for region, outlier in zip(found, outlying, strict=True)]
        return found


NO_DRIFT = DriftResponse()


def in_drift_region(features: Mapping | None, regions: Sequence[Mapping]) -> bool:
    """Whether a prediction's features fall in any region that grew: a numeric value in
    [low, high) (None unbounded), or a category among the region's."""
    if not features:
        return False
    for region in regions:
        value = features.get(region["feature"])
        if value is None or isinstance(value, bool):
            continue
        if "categories" in region:
            if str(value) in region["categories"]:
                return True
        elif isinstance(value, int | float):
            low, high = region.get("low"), region.get("high")
            if (low is None or value >= low) and (high is None or value < high):
                return True
    return False


def outlier_rows(features: Sequence[Mapping | None], names: Sequence[str]) -> list[list[float]]:
    """The named numeric features of each prediction, NaN where missing or not a number."""
    def number(value) -> float:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan

    return [[number((f or {}).get(name)) for name in names] for f in features]


@dataclass(frozen=True, slots=True)
class Decision:
    routed: bool
    reason: str
    priority: float


def route_batch(scores: Sequence[float], audit_draws: Sequence[float], policy: RoutingPolicy,
                budget_granted: int, in_region: Sequence[bool] | None = None,
                drift: DriftResponse = NO_DRIFT) -> list[Decision]:
    """Decide, per prediction, whether it goes to the queue and why.

    `budget_granted` is how many uncertainty- and drift-region-routed tasks the daily
    budget allows for this batch (see `budget_request`); when it is short, uncertain
    candidates go first, the most uncertain first. `in_region` says which predictions fall
    in a region that grew while a drift alert is open; `drift` is what that alert asks.
    """
    in_region = in_region or [False] * len(scores)
    decisions: list[Decision | None] = [None] * len(scores)
    candidates = []
    for i, (score, draw) in enumerate(zip(scores, audit_draws, strict=True)):
        if draw < policy.audit_rate:
            decisions[i] = Decision(True, Reason.AUDIT, task_priority(Reason.AUDIT, score))
        elif drift.boosted(draw, policy.audit_rate):
            # Like the audit sample, a random draw: outside the budget and ahead in the queue.
            decisions[i] = Decision(True, Reason.DRIFT, task_priority(Reason.AUDIT, score))
        elif score >= policy.threshold or in_region[i]:
            candidates.append(i)
        else:
            decisions[i] = Decision(False, Reason.CONFIDENT, 0.0)
    if len(candidates) > budget_granted:
        candidates.sort(key=lambda i: (scores[i] >= policy.threshold, scores[i]), reverse=True)
    for rank, i in enumerate(candidates):
        reason = Reason.LOW_CONFIDENCE if scores[i] >= policy.threshold else Reason.DRIFT
        if rank < budget_granted:
            decisions[i] = Decision(True, reason, task_priority(reason, scores[i]))
        else:
            decisions[i] = Decision(False, Reason.BUDGET_EXHAUSTED, 0.0)
    return decisions  # type: ignore[return-value]


def budget_request(scores: Sequence[float], audit_draws: Sequence[float], policy: RoutingPolicy,
                   in_region: Sequence[bool] | None = None, drift: DriftResponse = NO_DRIFT) -> int:
    """How many of these predictions want a slot of the daily budget."""
    in_region = in_region or [False] * len(scores)
    return sum(
        1 for score, draw, region in zip(scores, audit_draws, in_region, strict=True)
        if draw >= policy.audit_rate and not drift.boosted(draw, policy.audit_rate)
        and (score >= policy.threshold or region)
    )
