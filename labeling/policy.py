"""A project's labeling policy: how gold tasks are mixed in and when overlap needs review."""

from dataclasses import dataclass, field

from common.policy import Policy


@dataclass(frozen=True)
class GroupingPolicy(Policy):
    # Groups are built on the beat only when enabled; POST groups/build/ builds on demand.
    enabled: bool = False
    # A cluster with fewer members stays ungrouped; a larger one is cut again.
    min_size: int = 3
    max_size: int = 50
    # Clusters are about this large: the digits measured 98.5% purity at 20 (docs/concepts.md).
    target_size: int = 20
    # The most important open tasks a build considers (clustering is quadratic in them).
    max_tasks: int = 5000


@dataclass(frozen=True)
class LabelingPolicy(Policy):
    # Share of the tasks an annotator is served that are gold tasks (known answers).
    gold_rate: float = 0.05
    # With overlap, the majority label is accepted when this share of annotators agree on
    # it (and no other label ties it); otherwise the task goes to review.
    min_agreement: float = 0.6
    # Share of group-labeled members labeled again, individually, by another annotator:
    # the sample group-label accuracy is estimated from.
    group_check_rate: float = 0.1
    grouping: dict = field(default_factory=dict)

    def __post_init__(self):
        # Stored whole, defaults filled in, keys an older version wrote dropped.
        object.__setattr__(self, "grouping", GroupingPolicy.from_dict(self.grouping).as_dict())

    @property
    def grouping_policy(self) -> GroupingPolicy:
        return GroupingPolicy.from_dict(self.grouping)



# How much training trusts a resolved label, by where it came from. Feedback from end
# users is a weak label: plentiful, and wrong more often than an annotator.
LABEL_WEIGHTS = {"gold": 1.0, "review": 1.0, "consensus": 1.0, "annotation": 1.0, "feedback": 0.5,
                 "group": 1.0}
