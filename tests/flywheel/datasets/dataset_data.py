"""Labeled predictions for the dataset tests, made through the ingestion service, with
resolved labels written the way labeling resolves them (one current row per prediction)."""

from common.storage import get_storage
from flywheel.datasets import services as datasets
from flywheel.ingest.services import predictions_ingest
from flywheel.ingest.validation import PredictionInput
from flywheel.models import DatasetVersion, Prediction
from labeling.models import Label


def ingest(project, ids, **overrides) -> dict[str, int]:
    """Predictions p-<i> for each i in `ids`; returns {external id: row id}."""
    items = []
    for i in ids:
        fields = dict(external_id=f"p-{i}", model_version="v1", label=str(i % 10), confidence=0.9,
                      probabilities=None, features={"f0": float(i), "f1": i / 7, "color": ["red", "green"][i % 2]},
                      input={}, metadata={}, created_at=None)
        if i % 3 == 0:
            fields["input"] = {"text": f"text {i}"}
        elif i % 3 == 1:
            fields["input"] = {"image_url": f"s3://images/{i}.png"}
        fields.update(overrides)
        items.append(PredictionInput(**fields))
    predictions_ingest(project=project, items=items)
    return dict(Prediction.objects.filter(project=project, external_id__in=[f"p-{i}" for i in ids])
                .values_list("external_id", "id"))


def label(project, ids, labels=None, *, source="annotation", weight=1.0) -> None:
    """Resolve a label for predictions p-<i>: supersedes the current one, keeps history."""
    rows = dict(Prediction.objects.filter(project=project, external_id__in=[f"p-{i}" for i in ids])
                .values_list("external_id", "id"))
    pks = [rows[f"p-{i}"] for i in ids]
    Label.objects.filter(prediction_id__in=pks, is_current=True).update(is_current=False)
    Label.objects.bulk_create([
        Label(project=project, prediction_id=pk, label=labels[n] if labels else str(i % 10), source=source,
              weight=weight)
        for n, (i, pk) in enumerate(zip(ids, pks, strict=True))
    ])


def unlabel(project, ids) -> None:
    Label.objects.filter(project=project, prediction__external_id__in=[f"p-{i}" for i in ids],
                         is_current=True).update(is_current=False)


def build(project, *, note: str = "") -> DatasetVersion:
    """Create a version and build it in this process (the task's work, without the queue)."""
    version = datasets.dataset_version_create(project=project, note=note)
    datasets.dataset_version_build(version_id=version.pk)
    version.refresh_from_db()
    return version


def rows(version) -> dict[str, dict]:
    """Every row of a ready version, read back from storage (verified), by prediction id."""
    from flywheel.datasets.selectors import version_partitions

    out = {}
    for table in version_partitions(version=version):
        for row in table.to_pylist():
            out[row["prediction_id"]] = row
    return out


def shard_keys(project) -> set[str]:
    return set(get_storage().list(f"datasets/{project.slug}/shards/"))
