"""Input and output shapes of the annotation queue API (docs/api.md: Annotation queue)."""

from django.urls import reverse
from rest_framework import serializers

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
        return sorted(prediction.ruled_out_labels.values_list("label", flat=True))

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
