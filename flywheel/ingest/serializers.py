"""Input and output shapes of the ingestion API: predictions and end users' feedback."""

import numpy as np
from django.conf import settings
from django.utils import timezone
from rest_framework import serializers

from common.errors import DomainError
from flywheel.ingest.validation import (
    FEEDBACK_KINDS,
    BatchTooLarge,
    ImageLimits,
    InputErrors,
    PredictionInput,
    parse_feedback,
    parse_predictions,
    parse_shadow_predictions,
)
from flywheel.models import Prediction, Project


class PredictionInputDoc(serializers.Serializer):
    """One prediction (documentation of the body; validation is flywheel.validation)."""

    id = serializers.CharField(required=False, max_length=128, help_text="Idempotency key; a UUID if omitted.")
    model_version = serializers.CharField(max_length=64)
    label = serializers.CharField(help_text="The predicted label; in the project's label set.")
    confidence = serializers.FloatField(required=False, min_value=0, max_value=1)
    probabilities = serializers.DictField(child=serializers.FloatField(), required=False,
                                          help_text="label: probability, summing to 1.")
    features = serializers.DictField(required=False)
    input = serializers.DictField(required=False, help_text="text, image (base64) or image_url (s3:// or https://).")
    metadata = serializers.DictField(required=False)
    created_at = serializers.DateTimeField(required=False)
    embedding = serializers.ListField(child=serializers.FloatField(), required=False, min_length=1, max_length=4096,
                                      help_text="The app's own representation of the input: up to 4,096 finite "
                                                "numbers, stored as float32. Group labeling compares it.")


class PredictionBatchInputDoc(serializers.Serializer):
    predictions = PredictionInputDoc(many=True, help_text="Up to 10,000 predictions; all or nothing.")


class PredictionsInputSerializer(serializers.Serializer):
    """Validates a body of one prediction or a batch against the project, fast."""

    def __init__(self, *, project: Project, data):
        super().__init__(data=data)
        self.project = project

    def to_internal_value(self, data) -> tuple[list[PredictionInput], bool]:
        schema = {f["name"]: f["type"] for f in self.project.features} or None
        try:
            return parse_predictions(
                data, labels=frozenset(self.project.labels), features=schema,
                max_batch=settings.FLYWHEEL_MAX_BATCH,
                image_limits=ImageLimits(settings.FLYWHEEL_MAX_IMAGE_BYTES, settings.FLYWHEEL_MAX_IMAGE_PIXELS),
                now=timezone.now(),
            )
        except InputErrors as exc:
            raise serializers.ValidationError(exc.fields) from None
        except BatchTooLarge as exc:
            raise DomainError("batch_too_large", str(exc), status_code=413,
                              fields={"predictions": [f"At most {exc.limit} predictions per request."]}) from None


class RoutingResultSerializer(serializers.Serializer):
    id = serializers.CharField()
    routed = serializers.BooleanField()
    reason = serializers.CharField(help_text="Why it was (or was not) routed: low_confidence, audit, "
                                             "confident, budget_exhausted.")
    task_id = serializers.IntegerField(allow_null=True)
    duplicate = serializers.BooleanField(help_text="The id was already stored; nothing was created.")


class IngestResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    results = RoutingResultSerializer(many=True)


class TaskBriefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    reason = serializers.CharField()
    status = serializers.CharField()
    priority = serializers.FloatField()
    created_at = serializers.DateTimeField()


class ResolvedLabelSerializer(serializers.Serializer):
    label = serializers.CharField()
    source = serializers.CharField()
    weight = serializers.FloatField()
    created_at = serializers.DateTimeField()


class PredictionSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="external_id")
    model_version = serializers.CharField(source="model_version.name")
    uncertainty = serializers.SerializerMethodField()
    embedding = serializers.SerializerMethodField(help_text="The embedding as stored (float32), or null.")

    class Meta:
        model = Prediction
        fields = ["id", "model_version", "label", "confidence", "probabilities", "uncertainty", "features",
                  "input", "metadata", "embedding", "audit", "created_at", "received_at"]

    def get_uncertainty(self, obj) -> dict[str, float]:
        return {"least_confidence": obj.least_confidence, "margin": obj.margin, "entropy": obj.entropy}

    def get_embedding(self, obj) -> list[float] | None:
        if obj.embedding is None:
            return None
        return np.frombuffer(bytes(obj.embedding), dtype="<f4").tolist()


class PredictionDetailSerializer(PredictionSerializer):
    task = TaskBriefSerializer(allow_null=True, help_text="Its current (or latest) task.")
    tasks = TaskBriefSerializer(many=True, source="tasks_list")
    resolved_label = ResolvedLabelSerializer(allow_null=True)
    feedback = serializers.ListField(child=serializers.DictField(), source="feedback_list",
                                     help_text="Implicit feedback from end users, oldest first.")
    ruled_out_labels = serializers.ListField(child=serializers.CharField(), source="ruled_out",
                                             help_text="Labels end users ruled out (rejects).")

    class Meta(PredictionSerializer.Meta):
        fields = PredictionSerializer.Meta.fields + ["task", "tasks", "resolved_label", "feedback", "ruled_out_labels"]


class FeedbackInputDoc(serializers.Serializer):
    """One end-user signal (documentation of the body; validation is flywheel.validation)."""

    id = serializers.CharField(required=False, max_length=128, help_text="Idempotency key (optional).")
    prediction_id = serializers.CharField(max_length=128)
    kind = serializers.ChoiceField(choices=FEEDBACK_KINDS)
    label = serializers.CharField(required=False, help_text="The user's label; required with 'correct'.")
    user = serializers.CharField(required=False, max_length=128, help_text="The app's id of the end user.")
    created_at = serializers.DateTimeField(required=False)


class FeedbackBatchInputDoc(serializers.Serializer):
    feedback = FeedbackInputDoc(many=True)


class FeedbackInputSerializer(serializers.Serializer):
    def __init__(self, *, project: Project, data):
        super().__init__(data=data)
        self.project = project

    def to_internal_value(self, data):
        try:
            return parse_feedback(data, labels=frozenset(self.project.labels), max_batch=settings.FLYWHEEL_MAX_BATCH,
                                  now=timezone.now())
        except InputErrors as exc:
            raise serializers.ValidationError(exc.fields) from None
        except BatchTooLarge as exc:
            raise DomainError("batch_too_large", str(exc), status_code=413,
                              fields={"feedback": [f"At most {exc.limit} items per request."]}) from None


class FeedbackResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField(help_text="Items whose id was already stored.")
    resolved = serializers.IntegerField(help_text="Predictions whose label the feedback resolved.")
    routed = serializers.DictField(child=serializers.IntegerField(), help_text="Tasks created, by reason.")


class ShadowPredictionInputDoc(serializers.Serializer):
    """One shadow model's answer (documentation of the body; validation is flywheel.validation)."""

    prediction_id = serializers.CharField(max_length=128, help_text="The id of the prediction the champion served.")
    model_version = serializers.CharField(max_length=64, help_text="The shadow model; not the champion's version.")
    label = serializers.CharField(help_text="Its label; in the project's label set.")
    confidence = serializers.FloatField(required=False, min_value=0, max_value=1)
    probabilities = serializers.DictField(child=serializers.FloatField(), required=False,
                                          help_text="label: probability, summing to 1.")


class ShadowPredictionBatchInputDoc(serializers.Serializer):
    shadow_predictions = ShadowPredictionInputDoc(many=True, help_text="Up to 10,000; all or nothing.")


class ShadowPredictionsInputSerializer(serializers.Serializer):
    def __init__(self, *, project: Project, data):
        super().__init__(data=data)
        self.project = project

    def to_internal_value(self, data):
        try:
            return parse_shadow_predictions(data, labels=frozenset(self.project.labels),
                                            max_batch=settings.FLYWHEEL_MAX_BATCH)
        except InputErrors as exc:
            raise serializers.ValidationError(exc.fields) from None
        except BatchTooLarge as exc:
            raise DomainError("batch_too_large", str(exc), status_code=413,
                              fields={"shadow_predictions": [f"At most {exc.limit} items per request."]}) from None


class ShadowResultSerializer(serializers.Serializer):
    prediction_id = serializers.CharField()
    agrees = serializers.BooleanField(help_text="The shadow gave the champion's label.")
    routed = serializers.BooleanField(help_text="The prediction has a task whose label decides between them.")
    reason = serializers.CharField(help_text="agrees; or for a disagreement: disagreement, not_drawn, "
                                             "budget_exhausted, labeled, or the reason of the task it already had.")
    task_id = serializers.IntegerField(allow_null=True)
    duplicate = serializers.BooleanField(help_text="This answer was already stored; nothing was created.")


class ShadowIngestResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    results = ShadowResultSerializer(many=True)
