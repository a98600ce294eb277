"""Input and output shapes of the dataset API (docs/api.md: Datasets)."""

from rest_framework import serializers

from flywheel.datasets import shards
from flywheel.models import DatasetStatus, DatasetVersion


class DatasetCreateSerializer(serializers.Serializer):
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="",
                                 help_text="Why this version is made; kept on the version and in its manifest.")


class DatasetCountsSerializer(serializers.Serializer):
    rows = serializers.IntegerField()
    by_label = serializers.DictField(child=serializers.IntegerField())
    by_source = serializers.DictField(child=serializers.IntegerField())
    by_split = serializers.DictField(child=serializers.IntegerField(), help_text="train, validation, test.")


class DatasetVersionSerializer(serializers.Serializer):
    version = serializers.IntegerField(source="number")
    status = serializers.ChoiceField(choices=DatasetStatus.choices)
    parent = serializers.SerializerMethodField(help_text="The version this one was built from (its shards reused).")
    note = serializers.CharField()
    trigger = serializers.CharField()
    manifest_uri = serializers.SerializerMethodField()
    manifest_sha256 = serializers.SerializerMethodField(help_text="SHA-256 of the manifest's bytes.")
    counts = serializers.SerializerMethodField()
    phase = serializers.CharField(help_text="While building: queued, reading, uploading, publishing, retrying.")
    progress = serializers.FloatField(help_text="Share of the build done, 0-1.")
    heartbeat_at = serializers.DateTimeField(allow_null=True, help_text="Last sign of life of the build.")
    attempts = serializers.IntegerField()
    error = serializers.SerializerMethodField(help_text="Why the build failed (or was interrupted).")
    stats = serializers.JSONField(help_text="Shards and bytes the version names, and how many were uploaded "
                                            "or reused from earlier versions.")
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_parent(self, obj: DatasetVersion) -> int | None:
        return obj.parent.number if obj.parent_id else None

    def get_manifest_uri(self, obj: DatasetVersion) -> str | None:
        return obj.manifest_uri or None

    def get_manifest_sha256(self, obj: DatasetVersion) -> str | None:
        return obj.manifest_sha256 or None

    def get_counts(self, obj: DatasetVersion) -> DatasetCountsSerializer:
        counts = obj.counts or {}
        return {"rows": counts.get("rows", 0), "by_label": counts.get("by_label", {}),
                "by_source": counts.get("by_source", {}),
                "by_split": counts.get("by_split", dict.fromkeys(shards.SPLITS, 0))}

    def get_error(self, obj: DatasetVersion) -> str | None:
        return obj.error or None


class DiffLabelExampleSerializer(serializers.Serializer):
    prediction_id = serializers.CharField()
    label = serializers.CharField()


class DiffRelabelExampleSerializer(serializers.Serializer):
    prediction_id = serializers.CharField()
    to = serializers.CharField(help_text="The label in the second version.")

    def get_fields(self):
        # "from" is a Python keyword, so it cannot be declared as an attribute.
        return {**super().get_fields(), "from": serializers.CharField(help_text="The label in the first version.")}


class DiffExamplesSerializer(serializers.Serializer):
    added = DiffLabelExampleSerializer(many=True)
    removed = DiffLabelExampleSerializer(many=True)
    relabeled = DiffRelabelExampleSerializer(many=True)


class DatasetDiffSerializer(serializers.Serializer):
    to = serializers.IntegerField(help_text="The second version.")
    added = serializers.IntegerField(help_text="Rows in the second version and not the first.")
    removed = serializers.IntegerField(help_text="Rows in the first version and not the second.")
    relabeled = serializers.IntegerField(help_text="Rows in both whose label changed.")
    examples = DiffExamplesSerializer()

    def get_fields(self):
        return {"from": serializers.IntegerField(help_text="The first version."), **super().get_fields()}


class DiffQuerySerializer(serializers.Serializer):
    examples = serializers.IntegerField(min_value=0, max_value=100, default=10, required=False,
                                        help_text="Examples of each kind of change (0-100).")


class DiffPairQuerySerializer(DiffQuerySerializer):
    """The console's diff form: the two versions the API takes in its path, as fields."""

    a = serializers.IntegerField(min_value=1, help_text="The first version.")
    b = serializers.IntegerField(min_value=1, help_text="The second version.")


class ExportQuerySerializer(serializers.Serializer):
    split = serializers.ChoiceField(choices=shards.SPLITS, required=False, help_text="Only this split.")


EXPORT_CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
