"""Retention, the reads: which predictions the loop still needs, where an archived one lives,
and what a project holds, archived and removed."""

from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from django.db.models import Exists, F, IntegerField, OuterRef, QuerySet, Sum, Value
from django.db.models.functions import Cast, Mod, Substr

from common.storage import get_storage
from flywheel.models import (
    Disagreement,
    Feedback,
    Prediction,
    PredictionArchive,
    Project,
    RetentionRun,
    RetentionStatus,
    ShadowPrediction,
)
from flywheel.retention import bloom
from flywheel.retention.policy import RetentionPolicy
from labeling.models import GoldAnswer, Label, RuledOutLabel, Task

# What ties a prediction to the loop: a task (open or done), a label (current or history:
# dataset versions and accuracy history read them), feedback, a ruled-out label, a gold
# answer, a shadow model's answer or a disagreement (the live gate's comparison).
_NEEDED_BY = (Task, Label, Feedback, RuledOutLabel, GoldAnswer, ShadowPrediction, Disagreement)


def retention_eligible(*, project: Project, cutoff: datetime) -> QuerySet[Prediction]:
    """The project's predictions made before `cutoff` that nothing in the loop needs: not in
    the audit sample (production accuracy), already counted into the drift profiles, and
    with none of the rows above."""
    queryset = Prediction.objects.filter(project=project, created_at__lt=cutoff, audit=False,
                                         batch__profiled_at__isnull=False)
    for model in _NEEDED_BY:
        queryset = queryset.filter(~Exists(model.objects.filter(prediction_id=OuterRef("pk"))))
    return queryset


def archived_prediction_locate(*, project: Project, external_id: str) -> dict | None:
    """Where a prediction no longer in the database was archived: its part's key and URI,
    its day and row id; None when no part holds it.

    Each part's Bloom filter is asked in one query (K bytes read per part, whatever the
    part's size); the few parts that may hold the id are then read, their id column only,
    to rule out the filter's false matches."""
    h1, h2 = bloom.id_hashes(external_id)
    probes = {
        f"probe{i}": Substr("bloom", Cast(Mod(Value(h1 + i * h2), F("bloom_bits")) / 8 + 1, IntegerField()), 1)
        for i in range(bloom.K)
    }
    candidates = (PredictionArchive.objects.filter(project=project).annotate(**probes)
                  .values("key", "date", "bloom_bits", *probes).order_by("-date", "-id"))
    storage = get_storage()
    for part in candidates:
        positions = bloom.positions(external_id, part["bloom_bits"])
        if not all(bytes(part[f"probe{i}"])[0] & bloom.byte_and_mask(p)[1] for i, p in enumerate(positions)):
            continue
        table = pq.read_table(pa.BufferReader(storage.get(part["key"])), columns=["prediction_id", "row_id"])
        found = table.filter(pc.equal(table["prediction_id"], external_id))
        if found.num_rows:
            return {"key": part["key"], "uri": storage.uri(part["key"]), "date": part["date"].isoformat(),
                    "row_id": found["row_id"][0].as_py()}
    return None


def retention_stats(*, project: Project) -> dict:
    """The policy, what the project held after its last run, and what retention archived
    (rows in archive parts) and removed (from the database) in all. Held is the last run's
    count, not a live one: counting the table on every stats read would make the read grow
    with history."""
    last = (RetentionRun.objects.filter(project=project, status=RetentionStatus.SUCCEEDED)
            .order_by("-day").first())
    removed = RetentionRun.objects.filter(project=project).aggregate(n=Sum("removed"))["n"]
    parts = PredictionArchive.objects.filter(project=project).aggregate(rows=Sum("rows"), bytes=Sum("bytes"))
    return {
        "policy": RetentionPolicy.from_dict(project.retention).as_dict(),
        "held": last.held if last else None,
        "held_at": last.finished_at if last else None,
        "archived": parts["rows"] or 0,
        "removed": removed or 0,
        "archive_parts": PredictionArchive.objects.filter(project=project).count(),
        "archive_bytes": parts["bytes"] or 0,
        "last_run": None if last is None else {
            "day": last.day.isoformat(), "cutoff": last.cutoff, "archived": last.archived, "removed": last.removed,
            "partitions_dropped": last.partitions_dropped, "finished_at": last.finished_at},
    }
