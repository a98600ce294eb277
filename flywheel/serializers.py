"""Input and output shapes of the flywheel API (API.md: Projects, Predictions)."""

import math

from django.conf import settings
from django.utils import timezone
from rest_framework import serializers

from common.errors import DomainError
from flywheel.ingest import routing
from flywheel.ingest.validation import (
    FEATURE_NAME_RE,
    FEEDBACK_KINDS,
    BatchTooLarge,
    ImageLimits,
    InputErrors,
    PredictionInput,
    parse_feedback,
    parse_predictions,
)
from flywheel.models import FeatureType, Prediction, Project
from flywheel.training import evaluation
from flywheel.training.runs import RetrainingPolicy
from monitoring.policy import DriftPolicy
from monitoring.serializers import DriftPolicySerializer

# --- Projects --------------------------------------------------------------------------------


class FeatureSerializer(serializers.Serializer):
    name = serializers.RegexField(FEATURE_NAME_RE, max_length=64,
                                  error_messages={"invalid": "1 to 64 letters, digits, '_', '.' or '-'."})
    type = serializers.ChoiceField(choices=FeatureType.choices)
    # The range a numeric feature's values are known to lie in (pixels: 0 to 16). The built-in
    # trainer scales by it (retraining.feature_scaling "range"); values outside it are still
    # accepted: a reading past the range is information for drift checks, not bad input.
    min = serializers.FloatField(required=False, help_text="Lowest value a numeric feature is known to take.")
    max = serializers.FloatField(required=False, help_text="Highest value a numeric feature is known to take.")

    def validate(self, attrs):
        # A PATCH makes every nested field optional (DRF's `partial` reaches down), but a
        # PATCH replaces the feature list whole: an entry without a name or type was a 500.
        missing = {name: ["This field is required."] for name in ("name", "type") if name not in attrs}
        if missing:
            raise serializers.ValidationError(missing)
        bounds = [name for name in ("min", "max") if name in attrs]
        if bounds and attrs["type"] != FeatureType.NUMERIC:
            raise serializers.ValidationError({bounds[0]: ["Only a numeric feature has a range."]})
        if len(bounds) == 1:
            other = "max" if bounds == ["min"] else "min"
            raise serializers.ValidationError({other: [f"A range needs both min and max; {bounds[0]} alone is given."]})
        for name in bounds:
            if not math.isfinite(attrs[name]):
                raise serializers.ValidationError({name: ["Must be a finite number."]})
        if bounds and attrs["min"] >= attrs["max"]:
            raise serializers.ValidationError({"max": [f"Must be greater than min ({attrs['min']:g})."]})
        return attrs


class RoutingPolicySerializer(serializers.Serializer):
    uncertainty = serializers.ChoiceField(choices=routing.UNCERTAINTY_METHODS, required=False,
                                          help_text="How uncertainty is scored.")
    threshold = serializers.FloatField(min_value=0.0, max_value=1.0, required=False,
                                       help_text="Route when the uncertainty score reaches this (0-1).")
    audit_rate = serializers.FloatField(min_value=0.0, max_value=1.0, required=False,
                                        help_text="Share of predictions routed at random, whatever their confidence.")
    daily_budget = serializers.IntegerField(min_value=0, max_value=10_000_000, required=False,
                                            help_text="Uncertainty-routed tasks per UTC day.")
    annotations_per_task = serializers.IntegerField(min_value=1, max_value=10, required=False,
                                                    help_text="Distinct annotators per task (overlap).")
    demote_stale = serializers.BooleanField(
        required=False, help_text="When a new champion serves, open uncertainty-routed tasks scored by an earlier "
                                  "model are served after the ones it routed.")
    skip_resolved = serializers.BooleanField(
        required=False, help_text="When end-user feedback resolves a prediction's label, its open uncertainty-routed "
                                  "task is canceled (audit tasks stay).")


class RetrainingPolicySerializer(serializers.Serializer):
    min_new_labels = serializers.IntegerField(min_value=0, required=False,
                                              help_text="Retrain once this many new resolved labels exist (0: never).")
    on_drift = serializers.BooleanField(required=False, help_text="Retrain when a drift check reports drift.")
    schedule = serializers.ChoiceField(choices=["none", "hourly", "daily", "weekly"], required=False)
    trainer = serializers.CharField(max_length=32, required=False,
                                    help_text="A trainer plug-in (FLYWHEEL_TRAINERS).")
    eval_dataset_version = serializers.IntegerField(
        min_value=1, required=False, allow_null=True,
        help_text="Pin the frozen evaluation set: this version's test split.")
    primary_metric = serializers.ChoiceField(choices=["macro_f1", "accuracy"], required=False,
                                             help_text="What the gate compares.")
    min_improvement = serializers.FloatField(min_value=0.0, max_value=1.0, required=False,
                                             help_text="How much better than the champion a candidate must be.")
    require_significance = serializers.BooleanField(required=False,
                                                    help_text="And significantly so (McNemar's test).")
    significance_level = serializers.FloatField(min_value=0.0001, max_value=0.5, required=False)
    slice_tolerance = serializers.FloatField(min_value=0.0, max_value=1.0, required=False,
                                             help_text="How far behind the champion a declared slice may fall.")
    min_slice_size = serializers.IntegerField(min_value=1, required=False,
                                              help_text="Evaluation rows a slice needs to be judged.")
    feature_scaling = serializers.ChoiceField(
        choices=["standard", "max_abs", "range"], required=False,
        help_text="How the built-in trainer scales numeric features: standard; max_abs (by the largest value "
                  "in the training rows); or range (by each feature's declared min and max, max_abs where none "
                  "is declared).")
    external_url = serializers.CharField(max_length=500, required=False, allow_blank=True,
                                         help_text="The external trainer's endpoint (trainer 'external').")
    external_secret = serializers.CharField(max_length=200, required=False, allow_blank=True, write_only=True,
                                            help_text="Signs the calls to the external trainer; never shown.")

    def validate_trainer(self, value):
        if value not in settings.FLYWHEEL_TRAINERS:
            names = ", ".join(sorted(settings.FLYWHEEL_TRAINERS))
            raise serializers.ValidationError(f"No trainer '{value}'; one of {names}.")
        return value

    def validate_external_url(self, value):
        from monitoring.webhooks import WebhookURLError, url_check

        if value:
            try:
                url_check(value)
            except WebhookURLError as exc:
                raise serializers.ValidationError(str(exc)) from None
        return value


class FeedbackPolicySerializer(serializers.Serializer):
    min_users = serializers.IntegerField(min_value=1, max_value=1000, required=False,
                                         help_text="Distinct end users agreeing on a label that resolve it.")
    accept_runner_up = serializers.BooleanField(required=False,
                                                help_text="A correction to the model's runner-up resolves the label.")
    queue_corrections = serializers.BooleanField(required=False,
                                                 help_text="Send corrections not trusted alone to the queue.")


class LabelingPolicySerializer(serializers.Serializer):
    gold_rate = serializers.FloatField(min_value=0.0, max_value=1.0, required=False,
                                       help_text="Share of served tasks that are gold tasks.")
    min_agreement = serializers.FloatField(min_value=0.0, max_value=1.0, required=False,
                                           help_text="With overlap, majority share needed to resolve without review.")


def _unique(values: list, what: str) -> list:
    if len(set(values)) != len(values):
        raise serializers.ValidationError(f"{what} must be unique.")
    return values


class ProjectInputSerializer(serializers.Serializer):
    slug = serializers.SlugField(max_length=50)
    name = serializers.CharField(max_length=200)
    labels = serializers.ListField(child=serializers.CharField(max_length=64), min_length=1, max_length=1000)
    features = FeatureSerializer(many=True, required=False)
    routing = RoutingPolicySerializer(required=False)
    retraining = RetrainingPolicySerializer(required=False)
    labeling = LabelingPolicySerializer(required=False)
    drift = DriftPolicySerializer(required=False, help_text="Drift policy (README.md, Drift).")
    feedback = FeedbackPolicySerializer(required=False)
    slices = serializers.ListField(child=serializers.CharField(max_length=64), required=False, max_length=20,
                                   help_text="Metadata keys reported as slices.")

    def validate_labels(self, value):
        return _unique(value, "Labels")

    def validate_features(self, value):
        _unique([f["name"] for f in value], "Feature names")
        return value


class ProjectUpdateSerializer(ProjectInputSerializer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, partial=True, **kwargs)
        self.fields.pop("slug")


class ProjectSerializer(serializers.ModelSerializer):
    drift = serializers.SerializerMethodField(help_text="Drift policy; the webhook secret is not shown.")
    retraining = serializers.SerializerMethodField(help_text="Retraining policy; the trainer's secret is not shown.")

    class Meta:
        model = Project
        fields = ["slug", "name", "task_type", "labels", "features", "routing", "labeling", "retraining", "drift",
                  "feedback", "slices", "created_at", "updated_at"]

    def get_drift(self, project) -> dict:
        return DriftPolicy.from_dict(project.drift).masked()

    def get_retraining(self, project) -> dict:
        policy = {**RetrainingPolicy.from_dict(project.retraining).as_dict(),
                  **evaluation.GatePolicy.from_dict(project.retraining).as_dict()}
        policy["external_secret"] = "(set)" if policy.get("external_secret") else ""
        return policy


# --- Predictions -------------------------------------------------------------------------------


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

    class Meta:
        model = Prediction
        fields = ["id", "model_version", "label", "confidence", "probabilities", "uncertainty", "features",
                  "input", "metadata", "audit", "created_at", "received_at"]

    def get_uncertainty(self, obj) -> dict[str, float]:
        return {"least_confidence": obj.least_confidence, "margin": obj.margin, "entropy": obj.entropy}


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


# --- Feedback ----------------------------------------------------------------------------------


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


# --- Training runs and the model registry --------------------------------------------------------


class TrainingRunInputSerializer(serializers.Serializer):
    dataset_version = serializers.IntegerField(min_value=1, required=False,
                                               help_text="Train on this ready version instead of building a new one.")


class TrainingRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    number = serializers.IntegerField()
    status = serializers.CharField()
    stage = serializers.CharField()
    trigger = serializers.CharField()
    triggers = serializers.ListField(child=serializers.DictField())
    trainer = serializers.CharField()
    dataset_version = serializers.IntegerField(source="dataset_version.number", allow_null=True, default=None)
    eval_dataset_version = serializers.IntegerField(source="eval_dataset_version.number", allow_null=True,
                                                    default=None)
    model_version = serializers.CharField(source="model_version.name", allow_null=True, default=None)
    champion = serializers.CharField(source="champion.name", allow_null=True, default=None,
                                     help_text="The champion it was compared with.")
    metrics = serializers.DictField()
    gate = serializers.SerializerMethodField()
    promoted = serializers.BooleanField()
    error = serializers.CharField()
    progress = serializers.FloatField()
    heartbeat_at = serializers.DateTimeField(allow_null=True)
    attempts = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_gate(self, run) -> dict:
        return {"passed": run.gate.get("passed"), "reasons": run.gate.get("reasons", [])} if run.gate else \
            {"passed": None, "reasons": []}


class ModelVersionSerializer(serializers.Serializer):
    name = serializers.CharField()
    source = serializers.CharField()
    aliases = serializers.ListField(child=serializers.CharField(), source="alias_names")
    trainer = serializers.CharField()
    dataset_version = serializers.IntegerField(source="dataset_version.number", allow_null=True, default=None)
    artifact_uri = serializers.CharField()
    artifact_sha256 = serializers.CharField()
    libraries = serializers.DictField()
    metrics = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_metrics(self, version) -> dict:
        return {k: v for k, v in version.metrics.items() if k != "evaluation_predictions"}


class PromotionInputSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=1000, required=False, allow_blank=True)


class PromotionSerializer(serializers.Serializer):
    action = serializers.CharField()
    model_version = serializers.CharField(source="model_version.name")
    previous = serializers.CharField(source="previous.name", allow_null=True, default=None)
    actor = serializers.CharField(source="actor_name")
    reason = serializers.CharField()
    training_run = serializers.IntegerField(source="training_run.number", allow_null=True, default=None)
    created_at = serializers.DateTimeField()


MAX_METRICS_DEPTH = 16


def json_depth(value) -> int:
    """How deeply lists and objects nest in a parsed JSON value (a scalar is 0)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in children)
    return deepest


class TrainingCompleteInputSerializer(serializers.Serializer):
    model_version = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                                           error_messages={"invalid": "1 to 64 letters, digits, '.', '_' or '-'."})
    artifact_uri = serializers.CharField(max_length=500)
    metrics = serializers.DictField(required=False, default=dict)
    predictions = serializers.DictField(child=serializers.CharField(max_length=64), required=False,
                                        help_text="The candidate's label for each evaluation row, by row id.")

    def validate_metrics(self, value):
        # Free-form, but stored and shown with every answer about the model: orjson reads
        # 1,024 levels and writes only 254, so a deeper document would have made each of
        # those answers a 500.
        if json_depth(value) > MAX_METRICS_DEPTH:
            raise serializers.ValidationError(f"Nested more than {MAX_METRICS_DEPTH} levels deep.")
        return value
