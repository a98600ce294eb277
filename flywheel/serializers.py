"""Input and output shapes of the projects API: a project, its features and its policies."""

import math

from django.conf import settings
from rest_framework import serializers

from common.serializers import PolicySerializer
from common.url_safety import URLRefused, url_check
from flywheel.ingest import routing
from flywheel.ingest.validation import FEATURE_NAME_RE
from flywheel.models import FeatureType, Project
from flywheel.retention.policy import RetentionPolicy
from flywheel.training import evaluation
from flywheel.training.live import LiveGatePolicy
from flywheel.training.policy import RetrainingPolicy
from labeling.serializers import GroupingPolicySerializer
from monitoring.policy import DriftPolicy
from monitoring.serializers import DriftPolicySerializer


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


class StatsQuerySerializer(serializers.Serializer):
    accuracy_by = serializers.ChoiceField(
        choices=["hour", "day"], required=False,
        help_text="Add accuracy_series: each model version's label-free estimated accuracy per hour (last 48) or "
                  "day (last 30), beside the audit estimate of the same period.")


class RoutingPolicySerializer(PolicySerializer):
    uncertainty = serializers.ChoiceField(choices=routing.UNCERTAINTY_METHODS, required=False,
                                          help_text="How uncertainty is scored.")
    threshold = serializers.FloatField(min_value=0.0, max_value=1.0, required=False,
                                       help_text="Route when the uncertainty score reaches this (0-1).")
    audit_rate = serializers.FloatField(min_value=0.0, max_value=1.0, required=False,
                                        help_text="Share of predictions routed at random, whatever their confidence.")
    daily_budget = serializers.IntegerField(min_value=0, max_value=10_000_000, required=False,
                                            help_text="Uncertainty- and disagreement-routed tasks per UTC day.")
    annotations_per_task = serializers.IntegerField(min_value=1, max_value=10, required=False,
                                                    help_text="Distinct annotators per task (overlap).")
    demote_stale = serializers.BooleanField(
        required=False, help_text="When a new champion serves, open uncertainty-routed tasks scored by an earlier "
                                  "model are served after the ones it routed.")
    skip_resolved = serializers.BooleanField(
        required=False, help_text="When end-user feedback resolves a prediction's label, its open uncertainty-routed "
                                  "task is canceled (audit tasks stay).")
    disagreement_rate = serializers.FloatField(
        min_value=0.0, max_value=1.0, required=False,
        help_text="Share of the predictions a shadow model disagrees with the champion on that are routed "
                  "(reason disagreement), within the daily budget.")


class LiveGatePolicySerializer(PolicySerializer):
    enabled = serializers.BooleanField(required=False, help_text="A candidate that passes the offline gate goes into "
                                                                 "shadow; the live gate promotes or retires it.")
    min_labels = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False,
                                          help_text="Labeled disagreements needed before deciding.")
    min_improvement = serializers.FloatField(min_value=-1.0, max_value=1.0, required=False,
                                             help_text="Promote when the difference's lower bound passes this.")


class RetrainingPolicySerializer(PolicySerializer):
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
    live_gate = LiveGatePolicySerializer(required=False, help_text="Judge a candidate on live traffic in shadow.")

    def validate_trainer(self, value):
        if value not in settings.FLYWHEEL_TRAINERS:
            names = ", ".join(sorted(settings.FLYWHEEL_TRAINERS))
            raise serializers.ValidationError(f"No trainer '{value}'; one of {names}.")
        return value

    def validate_external_url(self, value):
        if value:
            try:
                url_check(value)
            except URLRefused as exc:
                raise serializers.ValidationError(str(exc)) from None
        return value


class FeedbackPolicySerializer(PolicySerializer):
    min_users = serializers.IntegerField(min_value=1, max_value=1000, required=False,
                                         help_text="Distinct end users agreeing on a label that resolve it.")
    accept_runner_up = serializers.BooleanField(required=False,
                                                help_text="A correction to the model's runner-up resolves the label.")
    queue_corrections = serializers.BooleanField(required=False,
                                                 help_text="Send corrections not trusted alone to the queue.")


class LabelingPolicySerializer(PolicySerializer):
    gold_rate = serializers.FloatField(min_value=0.0, max_value=1.0, required=False,
                                       help_text="Share of served tasks that are gold tasks.")
    min_agreement = serializers.FloatField(min_value=0.0, max_value=1.0, required=False,
                                           help_text="With overlap, majority share needed to resolve without review.")
    group_check_rate = serializers.FloatField(min_value=0.0, max_value=1.0, required=False,
                                              help_text="Share of group-labeled members labeled again individually.")
    grouping = GroupingPolicySerializer(required=False, help_text="Group labeling (docs/api.md: Groups).")


class RetentionPolicySerializer(PolicySerializer):
    raw_days = serializers.IntegerField(min_value=1, max_value=36_500, required=False, allow_null=True,
                                        help_text="Days raw predictions stay in the database (null: forever).")
    archive = serializers.BooleanField(required=False,
                                       help_text="Write them to the Parquet archive before they are removed.")


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
    drift = DriftPolicySerializer(required=False, help_text="Drift policy (docs/api.md: Drift).")
    feedback = FeedbackPolicySerializer(required=False)
    retention = RetentionPolicySerializer(required=False, help_text="Retention policy (docs/api.md: Retention).")
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
    retention = serializers.SerializerMethodField(help_text="Retention policy, with its defaults.")

    class Meta:
        model = Project
        fields = ["slug", "name", "task_type", "labels", "features", "routing", "labeling", "retraining", "drift",
                  "feedback", "retention", "slices", "created_at", "updated_at"]

    def get_drift(self, project) -> dict:
        return DriftPolicy.from_dict(project.drift).masked()

    def get_retention(self, project) -> dict:
        return RetentionPolicy.from_dict(project.retention).as_dict()

    def get_retraining(self, project) -> dict:
        policy = {**RetrainingPolicy.from_dict(project.retraining).as_dict(),
                  **evaluation.GatePolicy.from_dict(project.retraining).as_dict()}
        policy["external_secret"] = "(set)" if policy.get("external_secret") else ""
        policy["live_gate"] = LiveGatePolicy.from_dict(project.retraining.get("live_gate")).as_dict()
        return policy
