"""A project's labeling policy: how gold tasks are mixed in and when overlap needs review."""

from dataclasses import dataclass

from common.policy import Policy


@dataclass(frozen=True)
class LabelingPolicy(Policy):
    # Share of the tasks an annotator is served that are gold tasks (known answers).
    gold_rate: float = 0.05
    # With overlap, the majority label is accepted when this share of annotators agree on
    # it (and no other label ties it); otherwise the task goes to review.
    min_agreement: float = 0.6



# How much training trusts a resolved label, by where it came from. Feedback from end
# users is a weak label: plentiful, and wrong more often than an annotator.
LABEL_WEIGHTS = {"gold": 1.0, "review": 1.0, "consensus": 1.0, "annotation": 1.0, "feedback": 0.5}
