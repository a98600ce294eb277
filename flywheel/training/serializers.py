"""Input and output shapes of the training API: runs, the model registry, promotions, and
an external trainer's report."""

from rest_framework import serializers


class TrainingRunInputSerializer(serializers.Serializer):
    dataset_version = serializers.IntegerField(min_value=1, required=False,
                                               help_text="Train on this ready version instead of building a new one.")


class TrainingRunSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The run's id across projects: training-runs/{id}/ and the external "
                                            "trainer's complete/ call take it.")
    number = serializers.IntegerField(help_text="The run's number within its project (1, 2, 3...): its candidate "
                                                "model is named run-<number>.")
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
    training_run = serializers.IntegerField(source="training_run.number", allow_null=True, default=None,
                                            help_text="The run's number in its project (as training_run_number).")
    training_run_number = serializers.IntegerField(source="training_run.number", allow_null=True, default=None,
                                                   help_text="The run's number in its project: model run-N.")
    training_run_id = serializers.IntegerField(source="training_run.pk", allow_null=True, default=None,
                                               help_text="The run's id, as in training-runs/{id}/.")
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


class IntervalSerializer(serializers.Serializer):
    value = serializers.FloatField(allow_null=True)
    low = serializers.FloatField(allow_null=True)
    high = serializers.FloatField(allow_null=True)


class AccuracyIntervalSerializer(IntervalSerializer):
    n = serializers.IntegerField(help_text="Audit-sample predictions with a human label.")


class ShadowSliceSerializer(serializers.Serializer):
    key = serializers.CharField()
    value = serializers.CharField()
    paired = serializers.IntegerField()
    labeled = serializers.IntegerField()
    difference = IntervalSerializer()


class ShadowComparisonSerializer(serializers.Serializer):
    model = serializers.CharField(help_text="The shadow model (challenger).")
    champion = serializers.CharField(allow_null=True, help_text="The model that served the paired predictions.")
    paired = serializers.IntegerField(help_text="Served predictions the shadow answered too.")
    agreement = serializers.FloatField(allow_null=True, help_text="Share of them it gave the champion's label.")
    labeled = serializers.DictField(child=serializers.IntegerField(),
                                    help_text="audit: labeled audit predictions; disagreement: labeled drawn "
                                              "disagreements.")
    accuracy = serializers.DictField(child=AccuracyIntervalSerializer(), help_text="champion and challenger, "
                                                                                   "from the audit sample.")
    difference = IntervalSerializer(help_text="challenger minus champion accuracy, from labeled disagreements.")
    p_value = serializers.FloatField(allow_null=True)
    slices = ShadowSliceSerializer(many=True)
    verdict = serializers.ChoiceField(choices=["better", "worse", "undecided"])
    reasons = serializers.ListField(child=serializers.CharField())
    shadow = serializers.SerializerMethodField(help_text="Its shadow here when Flywheel scores with it, else null.")

    def get_shadow(self, comparison) -> dict | None:
        shadow = comparison.get("shadow")
        return ShadowModelSerializer(shadow).data if shadow is not None else None


class ShadowModelSerializer(serializers.Serializer):
    model = serializers.CharField(source="model_version.name")
    state = serializers.CharField(help_text="active, stopped, retired (by the live gate) or promoted.")
    training_run = serializers.IntegerField(source="training_run.number", allow_null=True, default=None,
                                            help_text="The run whose candidate went into shadow.")
    started_at = serializers.DateTimeField()
    started_by = serializers.CharField()
    ended_at = serializers.DateTimeField(allow_null=True)
    reason = serializers.CharField()
    verdict = serializers.CharField(help_text="The live gate's last verdict; empty before its first look.")
    reasons = serializers.ListField(child=serializers.CharField())
    evaluated_at = serializers.DateTimeField(allow_null=True)
