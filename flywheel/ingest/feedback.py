"""When end-user feedback becomes a label, when it goes to the queue, and when it conflicts.
Pure Python: the decision for one prediction, from everything known about it."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from common.policy import Policy

# A group label is a person's decision too, made once for similar items.
HUMAN_SOURCES = frozenset({"annotation", "consensus", "review", "gold", "group"})


@dataclass(frozen=True)
class FeedbackPolicy(Policy):
    # This many distinct end users agreeing on a label (a confirm agrees with the model's
    # label, a correction with its own) make it the resolved label.
    min_users: int = 3
    # A single correction to the model's runner-up label is trusted: the model itself
    # thought it the next most likely.
    accept_runner_up: bool = True
    # A correction that is not trusted on its own is sent to the annotation queue.
    queue_corrections: bool = True



@dataclass(frozen=True)
class Signal:
    kind: str  # confirm | correct | reject
    label: str  # the label it speaks for (confirm: the model's; reject: the one rejected)
    user: str  # the end user; "" when the app did not say


@dataclass
class Decision:
    rule_out: set[str] = field(default_factory=set)
    resolve: str | None = None
    route: str | None = None  # feedback_conflict | feedback_reject
    why: str = ""


def runner_up(probabilities: Mapping[str, float] | None, predicted: str) -> str | None:
    """The label the model ranked second (None without probabilities)."""
    ranked = sorted(((p, label) for label, p in (probabilities or {}).items() if label != predicted), reverse=True)
    return ranked[0][1] if ranked else None


def decide(*, predicted: str, probabilities: Mapping[str, float] | None, signals: Sequence[Signal],
           current_label: str | None, current_source: str | None, ruled_out: set[str],
           policy: FeedbackPolicy) -> Decision:
    """What the feedback on one prediction leads to, given all of it (in arrival order):
    - a reject rules out the label it rejects; with no label known, the prediction is routed;
    - a correction that contradicts a label people resolved, or another user's correction,
      is a conflict, routed for a person to settle;
    - otherwise, enough agreeing users, or a correction to the model's runner-up, resolve the
      label; an untrusted correction is routed.
    Each end user's latest signal is the one that counts."""
    decision = Decision(rule_out={s.label for s in signals if s.kind == "reject"})
    excluded = ruled_out | decision.rule_out
    latest: dict[str, Signal] = {}
    anonymous: list[Signal] = []
    for signal in signals:
        if signal.user:
            latest[signal.user] = signal
        else:
            anonymous.append(signal)
    voters = list(latest.values()) + anonymous
    votes: dict[str, int] = {}
    corrections: set[str] = set()
    for signal in voters:
        if signal.kind in ("confirm", "correct"):
            votes[signal.label] = votes.get(signal.label, 0) + 1
        if signal.kind == "correct":
            corrections.add(signal.label)

    human = current_label is not None and current_source in HUMAN_SOURCES
    if human and (corrections - {current_label} or current_label in excluded):
        decision.route, decision.why = "feedback_conflict", "feedback contradicts the resolved label"
        return decision
    if len(corrections) > 1:
        decision.route, decision.why = "feedback_conflict", "end users corrected to different labels"
        return decision
    if human:
        return decision

    candidates = {label: n for label, n in votes.items() if label not in excluded}
    agreed = [label for label, n in candidates.items() if n >= policy.min_users]
    if len(candidates) == 1 and agreed:
        decision.resolve, decision.why = agreed[0], f"{candidates[agreed[0]]} end users agree"
    elif corrections:
        (corrected,) = corrections
        if policy.accept_runner_up and corrected == runner_up(probabilities, predicted) and corrected not in excluded:
            decision.resolve, decision.why = corrected, "correction to the model's runner-up"
        elif policy.queue_corrections:
            decision.route, decision.why = "feedback_conflict", "a correction the policy does not trust alone"
    elif decision.rule_out and current_label is None:
        decision.route, decision.why = "feedback_reject", "rejected, right label unknown"
    if decision.resolve is not None and decision.resolve == current_label:
        decision.resolve = None  # already the label
    if decision.resolve is None and current_label is not None and current_label in excluded:
        decision.route, decision.why = "feedback_reject", "the feedback label was rejected"
    return decision
