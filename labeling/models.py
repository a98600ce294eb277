"""The annotation queue: tasks, leases, annotations, reviews, gold answers, and the labels
people resolve from them."""

from django.conf import settings
from django.db import models

from common.models import TimeStampedModel


class TaskReason(models.TextChoices):
    LOW_CONFIDENCE = "low_confidence", "Low confidence"
    AUDIT = "audit", "Random audit sample"
    FEEDBACK_CONFLICT = "feedback_conflict", "Feedback conflicts with a label"
    FEEDBACK_REJECT = "feedback_reject", "End user rejected the prediction"
    DRIFT = "drift", "Drifted data"
    GOLD = "gold", "Gold task with a known answer"
    GROUP_CHECK = "group_check", "Group label checked by a second annotator"
    DISAGREEMENT = "disagreement", "A shadow model disagrees with the champion"


# Never grouped: the audit sample and the checks must be labeled one by one, or the
# accuracy they estimate is biased; gold tasks measure one annotator at a time.
UNGROUPABLE_REASONS = ("audit", "gold", "group_check")


class TaskStatus(models.TextChoices):
    OPEN = "open", "Open: has room for another annotator"
    LEASED = "leased", "Leased: every remaining annotation is held by someone"
    REVIEW = "review", "Needs review"
    DONE = "done", "Done"
    CANCELED = "canceled", "Canceled"


ACTIVE_TASK_STATUSES = (TaskStatus.OPEN, TaskStatus.LEASED, TaskStatus.REVIEW)


class GroupStatus(models.TextChoices):
    OPEN = "open", "Open: can be claimed"
    LEASED = "leased", "Leased: an annotator holds it"
    DONE = "done", "Done: labeled"


class Group(TimeStampedModel):
    """Open tasks similar in content, labeled at once. Leased like a task; its members are
    the tasks pointing at it. Open groups are rebuilt freely; leased and done ones are kept."""

    project = models.ForeignKey("flywheel.Project", on_delete=models.CASCADE, related_name="task_groups")
    status = models.CharField(max_length=16, choices=GroupStatus.choices, default=GroupStatus.OPEN)
    representation = models.CharField(max_length=32, help_text="What members were compared by: 'embedding' "
                                      "(with its length) or 'features'.")
    suggested_label = models.CharField(max_length=64, help_text="The label most members' model chose.")
    priority = models.FloatField(help_text="Its members' e^priority summed: the group's worth. Larger is served first.")
    leased_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                                  related_name="+")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    label = models.CharField(max_length=64, blank=True, help_text="The label the group was given.")
    labeled_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    labeled_count = models.PositiveIntegerField(default=0, help_text="Members that took the label.")
    lead_time_s = models.FloatField(null=True, blank=True, help_text="Seconds the annotator spent on the group.")
    labeled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(status="leased", leased_by__isnull=False, lease_expires_at__isnull=False)
                           | (~models.Q(status="leased") & models.Q(leased_by__isnull=True))),
                name="group_leased_has_holder"),
        ]
        indexes = [models.Index(fields=["project", "status", "-priority", "id"], name="group_project_queue")]

    def __str__(self) -> str:
        return f"group {self.pk} ({self.status})"


class Task(TimeStampedModel):
    """One prediction a person should look at. Gold tasks are the exception: one is made
    per annotator and gold answer, to measure that annotator, and never enters the queue."""

    project = models.ForeignKey("flywheel.Project", on_delete=models.CASCADE, related_name="tasks")
    # Unenforced: predictions are partitioned by time on PostgreSQL (flywheel.partitions), and a
    # foreign key into a partitioned table must name the partition column too. Django cascades.
    prediction = models.ForeignKey("flywheel.Prediction", on_delete=models.CASCADE, related_name="tasks",
                                   db_constraint=False)
    reason = models.CharField(max_length=32, choices=TaskReason.choices)
    priority = models.FloatField(help_text="Larger is served first.")
    annotations_required = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.OPEN)
    round = models.PositiveSmallIntegerField(
        default=1, help_text="Starts again at each reviewer rejection; earlier rounds' annotations no longer count.")
    gold_for = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                                 related_name="+", help_text="The annotator a gold task was made for.")
    # One foreign key, so a task is in at most one group by construction.
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="members",
                              help_text="The group it is (or was labeled) in.")
    group_distance = models.FloatField(null=True, blank=True,
                                       help_text="Distance to its group's centre: larger is less typical.")
    grouping_excluded = models.BooleanField(
        default=False, help_text="Taken out of a group by an annotator: labeled on its own from then on.")
    not_for = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                                related_name="+", help_text="An annotator who may not take it (a group check is "
                                                            "never served to the group's labeler).")

    class Meta:
        constraints = [
            # A prediction is in the queue at most once at a time.
            models.UniqueConstraint(
                fields=["prediction"], name="task_one_active_per_prediction",
                condition=models.Q(status__in=["open", "leased", "review"]) & ~models.Q(reason="gold"),
            ),
            models.UniqueConstraint(fields=["prediction", "gold_for"], name="task_one_gold_per_annotator",
                                    condition=models.Q(reason="gold")),
            models.CheckConstraint(condition=models.Q(annotations_required__gte=1), name="task_needs_annotations"),
        ]
        indexes = [
            # The claim scans this, most important first.
            models.Index(fields=["project", "-priority", "id"], name="task_open_queue",
                         condition=models.Q(status="open")),
            models.Index(fields=["project", "status", "reason"], name="task_project_status"),
        ]

    def __str__(self) -> str:
        return f"task {self.pk} ({self.reason}, {self.status})"


class Lease(models.Model):
    """Who holds a task until when. Only live leases exist: a lease is deleted when its
    annotation arrives, when it is skipped, and when the sweep finds it expired."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="leases")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    expires_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task", "user"], name="lease_one_per_annotator")]


class Skip(models.Model):
    """An annotator passed on a task; it is not served to them again."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="skips")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task", "user"], name="skip_once_per_annotator")]


class Annotation(models.Model):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="annotations")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="annotations")
    label = models.CharField(max_length=64)
    round = models.PositiveSmallIntegerField(default=1)
    lead_time_s = models.FloatField(null=True, blank=True, help_text="Seconds the annotator spent on it.")
    accepted_suggestion = models.BooleanField(help_text="The annotator chose the model's own label.")
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="annotations",
                              help_text="The group it was given through, if any.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            # The same annotator never annotates the same task twice in a round.
            models.UniqueConstraint(fields=["task", "user", "round"], name="annotation_once_per_round"),
        ]
        indexes = [models.Index(fields=["user", "created_at"], name="annotation_user_time")]


class Verdict(models.TextChoices):
    ACCEPT = "accept", "Accept"
    REJECT = "reject", "Reject"


class Review(models.Model):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    round = models.PositiveSmallIntegerField()
    verdict = models.CharField(max_length=8, choices=Verdict.choices)
    label = models.CharField(max_length=64, blank=True, help_text="The label the reviewer accepted.")
    reason = models.CharField(max_length=500, blank=True,
                              help_text="Why the reviewer decided so (with a reject: what the annotators missed).")
    created_at = models.DateTimeField(auto_now_add=True)


class GoldAnswer(TimeStampedModel):
    """A prediction whose right label ops know; mixed into annotators' streams to measure them."""

    project = models.ForeignKey("flywheel.Project", on_delete=models.CASCADE, related_name="gold_answers")
    # Unenforced, as on Task: Django cascades.
    prediction = models.OneToOneField("flywheel.Prediction", on_delete=models.CASCADE, related_name="gold_answer",
                                      db_constraint=False)
    label = models.CharField(max_length=64)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")


class LabelSource(models.TextChoices):
    ANNOTATION = "annotation", "Single annotator"
    CONSENSUS = "consensus", "Majority of annotators"
    REVIEW = "review", "Reviewer's verdict"
    GOLD = "gold", "Gold answer"
    FEEDBACK = "feedback", "Trusted end-user feedback"
    GROUP = "group", "One annotator labeling a group"


class Label(models.Model):
    """The label the training set uses for a prediction. One current per prediction; a new
    resolution supersedes the old row instead of changing it, so history is kept."""

    project = models.ForeignKey("flywheel.Project", on_delete=models.CASCADE, related_name="labels_resolved")
    # Unenforced, as on Task: Django cascades.
    prediction = models.ForeignKey("flywheel.Prediction", on_delete=models.CASCADE, related_name="resolved_labels",
                                   db_constraint=False)
    label = models.CharField(max_length=64)
    source = models.CharField(max_length=16, choices=LabelSource.choices)
    weight = models.FloatField(default=1.0, help_text="How much training trusts it, by source.")
    task = models.ForeignKey(Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    is_current = models.BooleanField(default=True)
    previous = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                 help_text="The label this one superseded, restored if this one is undone.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["prediction"], condition=models.Q(is_current=True),
                                    name="label_one_current_per_prediction"),
        ]
        indexes = [models.Index(fields=["project", "is_current", "created_at"], name="label_project_current")]


class RuledOutLabel(models.Model):
    """A label a prediction cannot have: an end user rejected the model's label for it.
    Annotators cannot choose it (a reviewer still can, deliberately)."""

    # Unenforced, as on Task: Django cascades.
    prediction = models.ForeignKey("flywheel.Prediction", on_delete=models.CASCADE, related_name="ruled_out_labels",
                                   db_constraint=False)
    label = models.CharField(max_length=64)
    source = models.CharField(max_length=16, default="feedback")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["prediction", "label"], name="ruled_out_once")]
