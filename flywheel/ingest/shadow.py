"""Writes of shadow ingestion: a challenger's answers for served predictions, and the
routing of the predictions it disagrees with the champion on."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import orjson
import structlog
from django.db import connection, transaction
from django.utils import timezone

from common.errors import DomainError, NotFound, validation_message
from flywheel.ingest import routing
from flywheel.ingest.feedback import HUMAN_SOURCES
from flywheel.ingest.services import budget_take, model_versions_resolve
from flywheel.ingest.validation import ShadowPredictionInput
from flywheel.models import Disagreement, Prediction, Project, ShadowPrediction
from labeling import selectors as labeling_selectors
from labeling import services as labeling_services

log = structlog.get_logger(__name__)


@dataclass
class ShadowIngestResult:
    created: int = 0
    duplicates: int = 0
    results: list[dict] = field(default_factory=list)
    routed: int = 0

    def as_body(self) -> dict:
        """The answer the API gives (docs/api.md: Shadow predictions)."""
        return {"created": self.created, "duplicates": self.duplicates, "results": self.results}


def shadow_predictions_ingest(*, project: Project, items: list[ShadowPredictionInput], batch: bool,
                              now: datetime | None = None) -> ShadowIngestResult:
    """Store a shadow model's answers and route the predictions it disagrees with the
    champion on, in one transaction. Idempotent on (prediction, shadow version): a retried
    answer is reported with what was decided for it the first time. Nothing is stored when
    any item is refused."""
    now = now or timezone.now()
    policy = routing.RoutingPolicy.from_dict(project.routing)
    wanted = sorted({item.prediction_id for item in items})
    with transaction.atomic():
        # Locked in id order: two requests answering for the same predictions (two shadows,
        # or a retry) decide their routing one after the other, so it happens once.
        # Plain rows, not model instances: building 10,000 of them costs seconds.
        served = {row[1]: Served(*row) for row in Prediction.objects.select_for_update(of=("self",)).filter(
            project=project, external_id__in=wanted).order_by("id").values_list(
            "id", "external_id", "label", "model_version_id", "model_version__name")}
        _refuse_unknown_and_champions(items=items, served=served, batch=batch)
        # Versions are created only once every item is accepted (the cache of version ids
        # must never hold one a rolled-back transaction made).
        version_ids = model_versions_resolve(project=project, names={item.model_version for item in items})

        pairs: dict[tuple[int, int], ShadowPredictionInput] = {}
        for item in items:  # a repeat inside the request is a duplicate of its first copy
            pairs.setdefault((served[item.prediction_id].pk, version_ids[item.model_version]), item)
        stored = _stored_pairs(prediction_ids=[p.pk for p in served.values()], version_ids=set(version_ids.values()))
        fresh = [(key, item) for key, item in pairs.items() if key not in stored]
        _shadow_rows_insert(project=project, now=now, rows=[
            (pid, vid, served[item.prediction_id].model_version_id, item.label, item.confidence, item.probabilities,
             item.label == served[item.prediction_id].label) for (pid, vid), item in fresh])
        agrees = {**stored, **{key: item.label == served[item.prediction_id].label for key, item in fresh}}
        disagreeing = sorted({pid for (pid, _), agree in agrees.items() if not agree})
        routed = _disagreements_route(project=project, policy=policy, prediction_ids=disagreeing, now=now,
                                      external_ids={p.pk: p.external_id for p in served.values()})
        outcomes = {d.prediction_id: d for d in Disagreement.objects.filter(prediction_id__in=disagreeing)}

    result = ShadowIngestResult(created=len(fresh), routed=routed)
    created_keys = {key for key, _ in fresh}
    seen: set = set()
    for item in items:
        key = (served[item.prediction_id].pk, version_ids[item.model_version])
        duplicate = key in seen or key not in created_keys
        seen.add(key)
        result.duplicates += duplicate
        if agrees[key]:
            entry = {"agrees": True, "routed": False, "reason": routing.Reason.AGREES, "task_id": None}
        else:
            outcome = outcomes[key[0]]
            entry = {"agrees": False, "routed": outcome.task_id is not None, "reason": outcome.reason,
                     "task_id": outcome.task_id}
        result.results.append({"prediction_id": item.prediction_id, **entry, "duplicate": duplicate})
    log.info("shadow.stored", project=project.slug, created=result.created, duplicates=result.duplicates,
             disagreements=len(disagreeing), routed=routed)
    return result


class Served(NamedTuple):
    """A served prediction as shadow ingestion needs it."""

    pk: int
    external_id: str
    label: str
    model_version_id: int
    champion_name: str


# One statement per request on PostgreSQL, whatever its size: the rows go as arrays (one
# parameter per column), as predictions do. An answer already stored is left as it was.
_INSERT_SQL = """
INSERT INTO flywheel_shadowprediction (
    project_id, received_at, prediction_id, model_version_id, champion_id, label, confidence, probabilities, agrees)
SELECT %(project)s, %(now)s, rows.* FROM unnest(
    %(prediction)s::bigint[], %(model_version)s::bigint[], %(champion)s::bigint[], %(label)s::text[],
    %(confidence)s::float8[], %(probabilities)s::text[]::jsonb[], %(agrees)s::bool[]) AS rows
ON CONFLICT (prediction_id, model_version_id) DO NOTHING
"""


def _shadow_rows_insert(*, project: Project, now: datetime, rows: list[tuple]) -> int:
    """Insert (prediction id, shadow version id, champion id, label, confidence,
    probabilities, agrees) rows; returns how many were new."""
    if not rows:
        return 0
    if connection.vendor != "postgresql":
        created = ShadowPrediction.objects.bulk_create([
            ShadowPrediction(project=project, prediction_id=pid, model_version_id=vid, champion_id=cid, label=label,
                             confidence=confidence, probabilities=probabilities, agrees=agrees, received_at=now)
            for pid, vid, cid, label, confidence, probabilities, agrees in rows], batch_size=2000,
            ignore_conflicts=True)
        return len(created)
    columns = list(zip(*rows, strict=True))
    params = {"project": project.pk, "now": now, "prediction": list(columns[0]), "model_version": list(columns[1]),
              "champion": list(columns[2]), "label": list(columns[3]), "confidence": list(columns[4]),
              "probabilities": [None if p is None else orjson.dumps(p).decode() for p in columns[5]],
              "agrees": list(columns[6])}
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_SQL, params)
        return cursor.rowcount


def _refuse_unknown_and_champions(*, items, served: dict[str, "Served"], batch: bool) -> None:
    """A shadow answer needs a served prediction, and a model is no shadow of itself."""
    fields: dict[str, list[str]] = {}
    for index, item in enumerate(items):
        path = f"shadow_predictions[{index}]." if batch else ""
        prediction = served.get(item.prediction_id)
        if prediction is None:
            if not batch:
                raise NotFound("prediction_not_found", f"No prediction '{item.prediction_id}' in this project.")
            fields[path + "prediction_id"] = ["No such prediction in this project."]
        elif prediction.champion_name == item.model_version:
            fields[path + "model_version"] = [
                f"'{item.model_version}' served this prediction: it is the champion, not a shadow of it."]
        if len(fields) >= 50:
            break
    if fields:
        raise DomainError("invalid", validation_message(fields), fields=fields)


def _stored_pairs(*, prediction_ids: list[int], version_ids: set[int]) -> dict[tuple[int, int], bool]:
    """{(prediction id, shadow version id): agrees} of the answers already stored."""
    rows = ShadowPrediction.objects.filter(prediction_id__in=prediction_ids, model_version_id__in=version_ids)
    return {(pid, vid): agrees for pid, vid, agrees in rows.values_list("prediction_id", "model_version_id", "agrees")}


def shadow_scores_store(*, project: Project, model_version_id: int, served: list[Prediction], labels: list[str],
                        confidences: list[float], probabilities: list[dict[str, float]],
                        now: datetime | None = None) -> int:
    """Store what a shadow model scored here for served predictions (id, external_id, label
    and model_version_id loaded) and route the ones it disagrees on, in the caller's
    transaction. Returns how many answers were stored."""
    now = now or timezone.now()
    stored = _shadow_rows_insert(project=project, now=now, rows=[
        (p.pk, model_version_id, p.model_version_id, label, confidence, probs, label == p.label)
        for p, label, confidence, probs in zip(served, labels, confidences, probabilities, strict=True)])
    disagreeing = sorted({p.pk for p, label in zip(served, labels, strict=True) if label != p.label})
    _disagreements_route(project=project, policy=routing.RoutingPolicy.from_dict(project.routing),
                         prediction_ids=disagreeing, now=now, external_ids={p.pk: p.external_id for p in served})
    return stored


def _disagreements_route(*, project: Project, policy: routing.RoutingPolicy, external_ids: dict[int, str],
                         prediction_ids: list[int], now: datetime) -> int:
    """Decide, once per prediction, whether a disagreement goes to the queue: drawn at the
    policy's disagreement_rate (a draw fixed by the prediction id), within the daily budget.
    A prediction already in the queue, or already labeled by people, needs no second task:
    its label serves the comparison. Returns how many tasks were created."""
    decided = set(Disagreement.objects.filter(prediction_id__in=prediction_ids).values_list("prediction_id", flat=True))
    new = [pid for pid in prediction_ids if pid not in decided]
    if not new:
        return 0
    draws = {pid: routing.disagreement_draw(project.audit_salt, external_ids[pid]) for pid in new}
    drawn = [pid for pid in new if draws[pid] < policy.disagreement_rate]
    existing = labeling_selectors.active_tasks_for_predictions(drawn)
    # A label people gave serves; one end users' feedback resolved does not (they saw the
    # champion's answer, so it leans toward it), and the comparison leaves it out.
    labeled = labeling_selectors.labeled_predictions([pid for pid in drawn if pid not in existing],
                                                     sources=HUMAN_SOURCES)
    needing = sorted((pid for pid in drawn if pid not in existing and pid not in labeled), key=draws.__getitem__)
    granted = budget_take(project=project, day=now.date(), wanted=len(needing), limit=policy.daily_budget)
    task_ids = labeling_services.tasks_create(
        project_id=project.pk,
        specs=[labeling_services.TaskSpec(pid, routing.Reason.DISAGREEMENT,
                                          routing.disagreement_priority(draws[pid], policy.disagreement_rate))
               for pid in needing[:granted]],
        annotations_required=policy.annotations_per_task,
    )
    created = dict(zip(needing[:granted], task_ids, strict=True))
    rows = []
    for pid in new:
        if draws[pid] >= policy.disagreement_rate:
            reason, task_id = routing.Reason.NOT_DRAWN, None
        elif pid in existing:
            reason, task_id = existing[pid].reason, existing[pid].pk
        elif pid in labeled:
            reason, task_id = routing.Reason.LABELED, None
        elif pid in created:
            reason, task_id = routing.Reason.DISAGREEMENT, created[pid]
        else:
            reason, task_id = routing.Reason.BUDGET_EXHAUSTED, None
        rows.append(Disagreement(prediction_id=pid, project=project, rate=policy.disagreement_rate,
                                 drawn=draws[pid] < policy.disagreement_rate, reason=reason, task_id=task_id,
                                 created_at=now))
    Disagreement.objects.bulk_create(rows, batch_size=2000)
    return len(created)

