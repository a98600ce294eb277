"""Input and output shapes of the annotation queue API (docs/api.md: Annotation queue)."""

from django.urls import reverse
from rest_framework import serializers

from common.serializers import PolicySerializer
from common.url_safety import image_url_problem
from labeling.models import Verdict


class TaskPredictionSerializer(serializers.Serializer):
    """What an annotator needs to judge a prediction."""

    id = serializers.CharField(source="external_id")
    model_version = serializers.CharField(source="model_version.name")
    label = serializers.CharField(help_text="The model's label: the suggestion Enter accepts.")
    confidence = serializers.FloatField()
    probabilities = serializers.DictField(child=serializers.FloatField(), allow_null=True)
    text = serializers.SerializerMethodField()
    image_url = serializers.SerializerMethodField(help_text="Where the browser loads the image from, if any.")
    features = serializers.DictField()
    metadata = serializers.DictField()
    ruled_out_labels = serializers.SerializerMethodField(help_text="Labels end users ruled out.")

    def get_ruled_out_labels(self, prediction) -> list[str]:
        # .all(): a group's members arrive with theirs prefetched, one query for all of them.
        return sorted(ruled.label for ruled in prediction.ruled_out_labels.all())

    def get_text(self, prediction) -> str | None:
        return prediction.input.get("text")

    def get_image_url(self, prediction) -> str | None:
        task = self.context.get("task")
        if prediction.input.get("image") or str(prediction.input.get("image_url", "")).startswith("s3://"):
            return reverse("task-image", args=[task.pk]) if task is not None else None
        url = prediction.input.get("image_url")
        # Checked again on the way out: a URL stored before a host spelling was refused at
        # ingestion must not send the annotator's browser into their own network.
        return url if url and url.startswith("https://") and image_url_problem(url) is None else None


class TaskSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    reason = serializers.CharField()
    priority = serializers.FloatField()
    status = serializers.CharField()
    round = serializers.IntegerField()
    annotations_required = serializers.IntegerField()
    lease_expires_at = serializers.SerializerMethodField()
    prediction = serializers.SerializerMethodField()

    def get_lease_expires_at(self, task) -> str | None:
        lease = getattr(task, "lease", None)
        return serializers.DateTimeField().to_representation(lease.expires_at) if lease else None

    def get_prediction(self, task) -> dict:
        return TaskPredictionSerializer(task.prediction, context={"task": task}).data


class TaskListItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    reason = serializers.CharField()
    priority = serializers.FloatField()
    status = serializers.CharField()
    round = serializers.IntegerField()
    annotations_required = serializers.IntegerField()
    annotations = serializers.IntegerField(source="annotation_count", help_text="Annotations in the current round.")
    prediction_id = serializers.CharField(source="prediction.external_id")
    model_label = serializers.CharField(source="prediction.label")
    confidence = serializers.FloatField(source="prediction.confidence")
    created_at = serializers.DateTimeField()


class AnnotationInputSerializer(serializers.Serializer):
    label = serializers.CharField(max_length=64)
    lead_time_s = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=86_400,
                                         help_text="Seconds spent on the task.")


class ReviewInputSerializer(serializers.Serializer):
    verdict = serializers.ChoiceField(choices=Verdict.choices)
    label = serializers.CharField(max_length=64, required=False,
                                  help_text="With accept: the label to keep (default: the annotators' majority).")
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="",
                                   help_text="Why: kept with the review and in the audit log (most useful with a "
                                             "reject, to say what the annotators missed).")


class GoldInputSerializer(serializers.Serializer):
    prediction_id = serializers.CharField(max_length=128)
    label = serializers.CharField(max_length=64)


class LabelSerializer(serializers.Serializer):
    label = serializers.CharField()
    source = serializers.CharField()
    weight = serializers.FloatField()
    created_at = serializers.DateTimeField()


class GroupingPolicySerializer(PolicySerializer):
    enabled = serializers.BooleanField(required=False, help_text="Build groups on the beat.")
    min_size = serializers.IntegerField(min_value=2, max_value=500, required=False,
                                        help_text="Smaller clusters stay ungrouped.")
    max_size = serializers.IntegerField(min_value=2, max_value=500, required=False,
                                        help_text="Larger clusters are cut again.")
    target_size = serializers.IntegerField(min_value=2, max_value=500, required=False,
                                           help_text="The size clustering aims at.")
    max_tasks = serializers.IntegerField(min_value=10, max_value=20_000, required=False,
                                         help_text="The most important open tasks one build considers.")

    def validate(self, attrs):
        low, high = attrs.get("min_size"), attrs.get("max_size")
        if low is not None and high is not None and low > high:
            raise serializers.ValidationError({"max_size": ["Must be at least min_size."]})
        return attrs


class GroupListItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    size = serializers.IntegerField(help_text="Members now (labeled members, for a done group).")
    suggested_label = serializers.CharField(help_text="The label most members' model chose.")
    priority = serializers.FloatField()
    representation = serializers.CharField(help_text="'embedding:<length>' or 'features'.")
    leased_by = serializers.CharField(source="leased_by.username", allow_null=True, default=None)
    lease_expires_at = serializers.DateTimeField(allow_null=True)
    label = serializers.CharField(allow_blank=True, help_text="The label it was given (done groups).")
    labeled_by = serializers.CharField(source="labeled_by.username", allow_null=True, default=None)
    created_at = serializers.DateTimeField()


class GroupMemberSerializer(serializers.Serializer):
    task_id = serializers.IntegerField(source="pk")
    distance = serializers.FloatField(source="group_distance", allow_null=True,
                                      help_text="To the group's centre; members come farthest first.")
    atypical = serializers.SerializerMethodField(help_text="More than 1.25 times the median distance from the centre.")
    prediction = serializers.SerializerMethodField()

    def get_atypical(self, task) -> bool:
        return task.pk in self.context.get("atypical", ())

    def get_prediction(self, task) -> dict:
        return TaskPredictionSerializer(task.prediction, context={"task": task}).data


class GroupSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    size = serializers.SerializerMethodField()
    suggested_label = serializers.CharField()
    lease_expires_at = serializers.DateTimeField(allow_null=True)
    members = serializers.SerializerMethodField()

    def get_size(self, group) -> int:
        return len(group.members.all())

    def get_members(self, group) -> list[dict]:
        members = list(group.members.all())
        return GroupMemberSerializer(members, many=True, context={"atypical": atypical_members(members)}).data


def atypical_members(members) -> set[int]:
    """Members whose distance to the centre is more than 1.25 times the group's median: the
    ones a person should look at before labeling the rest at once. (A misfit pulls the
    centre towards itself, so a stricter cut missed a 7 among five 3s of the digits.)"""
    distances = sorted(m.group_distance for m in members if m.group_distance is not None)
    if len(distances) < 3:
        return set()
    median = distances[len(distances) // 2]
    return {m.pk for m in members if m.group_distance is not None and m.group_distance > 1.25 * median > 0}


class GroupAnnotationInputSerializer(serializers.Serializer):
    label = serializers.CharField(max_length=64)
    exclude = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, default=list,
                                    max_length=500, help_text="Task ids of members that do not belong.")
    lead_time_s = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=86_400,
                                         help_text="Seconds spent on the group.")


class GroupMergeInputSerializer(serializers.Serializer):
    def get_fields(self):
        # "with" is a Python keyword, so the field cannot be declared as a class attribute.
        return {"with": serializers.IntegerField(min_value=1, help_text="The group to fold into this one.")}


class GroupListParams(serializers.Serializer):
    status = serializers.ChoiceField(choices=["open", "leased", "done"], required=False)
    limit = serializers.IntegerField(min_value=1, max_value=500, default=100, help_text="At most 500.")
    offset = serializers.IntegerField(min_value=0, max_value=1_000_000_000, default=0)


class SimilarParams(serializers.Serializer):
    k = serializers.IntegerField(min_value=1, max_value=200, default=20, help_text="At most 200.")
