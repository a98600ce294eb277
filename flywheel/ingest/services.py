"""Writes of ingestion: model versions apps name, predictions (validated, stored and routed
in one transaction) and end users' feedback on them."""

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime

import orjson
import psycopg
import structlog
from django.db import connection, transaction
from django.utils import timezone

from common.errors import DomainError, NotFound, validation_message
from flywheel.ingest import routing
from flywheel.ingest.feedback import FeedbackPolicy, Signal
from flywheel.ingest.feedback import decide as decide_feedback
from flywheel.ingest.validation import (
    FeedbackInput,
    InputErrors,
    PredictionInput,
    check_features_against_schema,
    infer_feature_schema,
)
from flywheel.models import Feedback, IngestBatch, ModelVersion, Prediction, Project, RoutingBudget
from labeling import selectors as labeling_selectors
from labeling import services as labeling_services
from monitoring import metrics
from monitoring import selectors as monitoring_selectors
from monitoring.policy import DriftPolicy

log = structlog.get_logger(__name__)

ROUTING_REASONS = (routing.Reason.LOW_CONFIDENCE, routing.Reason.AUDIT, routing.Reason.DRIFT)







# --- Model versions -------------------------------------------------------------------------------


# Version ids never change and versions with predictions cannot be deleted, so each
# worker remembers them instead of asking the database on every request.
_model_version_ids: dict[tuple[int, str], int] = {}


def model_versions_resolve(*, project: Project, names: set[str]) -> dict[str, int]:
    """Ids of the named versions, creating the ones apps mention for the first time."""
    found = {name: _model_version_ids[(project.pk, name)] for name in names if (project.pk, name) in _model_version_ids}
    missing = names - found.keys()
    if missing:
        ModelVersion.objects.bulk_create(
            [ModelVersion(project=project, name=name) for name in sorted(missing)], ignore_conflicts=True
        )
        for name, pk in ModelVersion.objects.filter(project=project, name__in=missing).values_list("name", "id"):
            found[name] = _model_version_ids[(project.pk, name)] = pk
    return found


def model_version_cache_clear() -> None:
    _model_version_ids.clear()


# --- Ingestion ------------------------------------------------------------------------------------


@dataclass
class IngestResult:
    created: int = 0
    duplicates: int = 0
    results: list[dict] = field(default_factory=list)
    routed: dict[str, int] = field(default_factory=dict)

    def as_body(self) -> dict:
        """The answer the API gives (docs/api.md: Predictions)."""
        return {"created": self.created, "duplicates": self.duplicates, "results": self.results}

    def split(self, sizes: list[int]) -> list["IngestResult"]:
        """The results of requests that were ingested together, one per request, in order."""
        parts, start = [], 0
        for size in sizes:
            results = self.results[start:start + size]
            start += size
            part = IngestResult(results=results)
            for result in results:
                if result["duplicate"]:
                    part.duplicates += 1
                    continue
                part.created += 1
                if result["routed"]:
                    part.routed[result["reason"]] = part.routed.get(result["reason"], 0) + 1
            parts.append(part)
        return parts


def predictions_ingest(*, project: Project, items: list[PredictionInput], batch: bool = True,
                       now: datetime | None = None) -> IngestResult:
    """Store validated predictions and route them, all in one transaction: a prediction and
    its task exist together or not at all. Idempotent on the prediction id, also for two
    copies of one request arriving at once (the unique key decides who inserts)."""
    now = now or timezone.now()
    policy = routing.RoutingPolicy.from_dict(project.routing)
    n_labels = len(project.labels)

    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        first_index.setdefault(item.external_id, index)
    # Sorted, so that two requests inserting the same ids lock them in the same order.
    unique = sorted((items[i] for i in first_index.values()), key=lambda item: item.external_id)

    scores = [routing.uncertainty(item.confidence, item.probabilities, n_labels) for item in unique]
    draws = [routing.audit_draw(project.audit_salt, item.external_id) for item in unique]
    version_ids = model_versions_resolve(project=project, names={item.model_version for item in unique})
    drift = drift_response(project=project)
    regions = drift.in_regions([item.features for item in unique])

    # A request that routes nothing and infers no schema is a single INSERT statement,
    # atomic on its own: it skips the extra round trips of an explicit transaction.
    drawn_below = max(policy.audit_rate, drift.boost_audit_rate)
    routes_any = any(d < drawn_below or s.score(policy.uncertainty) >= policy.threshold or r
                     for s, d, r in zip(scores, draws, regions, strict=True))
    needs_transaction = routes_any or not project.features
    with transaction.atomic() if needs_transaction else nullcontext():
        if not project.features:
            _schema_settle(project=project, items=unique, batch=batch)
        inserted = _predictions_insert(project=project, items=unique, scores=scores, draws=draws, policy=policy,
                                       version_ids=version_ids, now=now)
        new = [i for i, item in enumerate(unique) if item.external_id in inserted]
        new_scores = [scores[i].score(policy.uncertainty) for i in new]
        new_draws = [draws[i] for i in new]
        new_regions = [regions[i] for i in new]
        wanted = routing.budget_request(new_scores, new_draws, policy, new_regions, drift)
        granted = budget_take(project=project, day=now.date(), wanted=wanted, limit=policy.daily_budget)
        decisions = routing.route_batch(new_scores, new_draws, policy, granted, new_regions, drift)
        routed = [(i, d) for i, d in zip(new, decisions, strict=True) if d.routed]
        task_ids = labeling_services.tasks_create(
            project_id=project.pk,
            specs=[labeling_services.TaskSpec(inserted[unique[i].external_id], d.reason, d.priority)
                   for i, d in routed],
            annotations_required=policy.annotations_per_task,
        )

    outcome: dict[str, dict] = {}
    for (i, decision), task_id in zip(routed, task_ids, strict=True):
        outcome[unique[i].external_id] = {"routed": True, "reason": decision.reason, "task_id": task_id}
    for i, decision in zip(new, decisions, strict=True):
        if not decision.routed:
            outcome[unique[i].external_id] = {"routed": False, "reason": decision.reason, "task_id": None}
    stored = [item.external_id for item in unique if item.external_id not in inserted]
    replayed = _stored_outcomes(project=project, external_ids=stored, policy=policy)

    result = IngestResult(created=len(inserted))
    seen: set[str] = set()
    for item in items:
        key = item.external_id
        duplicate = key in seen or key not in outcome
        seen.add(key)
        entry = outcome.get(key) or replayed[key]
        result.results.append({"id": key, **entry, "duplicate": duplicate})
        result.duplicates += duplicate
    for _, decision in routed:
        result.routed[decision.reason] = result.routed.get(decision.reason, 0) + 1
    log.info("ingest.stored", project=project.slug, created=result.created, duplicates=result.duplicates,
             routed=len(routed))
    return result


def drift_response(*, project: Project) -> routing.DriftResponse:
    """What an open drift alert asks of routing now; read only when the project's drift
    policy asks for anything, so a project without on_drift pays no query."""
    if not DriftPolicy.from_dict(project.drift).on_drift_policy().active:
        return routing.NO_DRIFT
    return routing.DriftResponse.from_actions(monitoring_selectors.drift_actions(project_id=project.pk))


def _schema_settle(*, project: Project, items: list[PredictionInput], batch: bool) -> None:
    """Infer the feature schema from the first predictions, once: the row lock makes two
    first batches arriving together agree on one schema."""
    locked = Project.objects.select_for_update().only("features").get(pk=project.pk)
    if not locked.features:
        locked.features = infer_feature_schema(items)
        if locked.features:
            Project.objects.filter(pk=project.pk).update(features=locked.features)
            log.info("project.schema_inferred", project=project.slug, features=len(locked.features))
    project.features = locked.features
    try:
        check_features_against_schema(items, {f["name"]: f["type"] for f in project.features}, batch=batch)
    except InputErrors as exc:
        raise DomainError("invalid", validation_message(exc.fields), fields=exc.fields) from None


def _json(value) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _predictions_insert(*, project, items, scores, draws, policy, version_ids, now) -> dict[str, int]:
    """Insert, skipping ids already stored, and record the request as an IngestBatch with
    the id range it created; returns {external_id: pk} of the rows inserted."""
    if not items:
        return {}
    if connection.vendor == "postgresql":
        return _predictions_insert_postgres(project, items, scores, draws, policy, version_ids, now)
    with transaction.atomic():  # the batch becomes visible with its id range, never before
        return _predictions_insert_portable(project, items, scores, draws, policy, version_ids, now)


def _predictions_insert_portable(project, items, scores, draws, policy, version_ids, now) -> dict[str, int]:
    batch = IngestBatch.objects.create(project=project, received_at=now)
    rows = [
        Prediction(
            project=project, external_id=item.external_id, model_version_id=version_ids[item.model_version],
            label=item.label, confidence=item.confidence, probabilities=item.probabilities,
            least_confidence=score.least_confidence, margin=score.margin, entropy=score.entropy,
            features=item.features, input=item.input, metadata=item.metadata, embedding=item.embedding,
            audit=draw < policy.audit_rate, batch_id=batch.pk, created_at=item.created_at or now, received_at=now,
        )
        for item, score, draw in zip(items, scores, draws, strict=True)
    ]
    Prediction.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
    inserted = dict(Prediction.objects.filter(batch_id=batch.pk).values_list("external_id", "id"))
    if inserted:
        times = [row.created_at for row in rows if row.external_id in inserted]
        IngestBatch.objects.filter(pk=batch.pk).update(
            first_prediction_id=min(inserted.values()), last_prediction_id=max(inserted.values()),
            first_created_at=min(times), last_created_at=max(times),
        )
    else:
        batch.delete()
    return inserted


# One statement: take a batch id and an id for every row, claim the rows' keys in the key
# table (the one that a retry, whatever its created_at, finds taken), insert the predictions
# whose key was claimed, then record the batch with the id range it created (no row when
# everything was a duplicate). The key table is the arbiter because the partitioned
# predictions table cannot hold a unique index without its partition column
# (flywheel.partitions); two requests with one id wait on each other there.
_INSERT_SQL = """
WITH batch AS (
    SELECT nextval(pg_get_serial_sequence('flywheel_ingestbatch', 'id')) AS id
), rows AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('flywheel_prediction', 'id')) AS id, rows.* FROM unnest(
        %(external_id)b::text[], %(model_version)b::bigint[], %(label)b::text[], %(confidence)b::float8[],
        %(probabilities)b::text[]::jsonb[], %(least_confidence)b::float8[], %(margin)b::float8[],
        %(entropy)b::float8[], %(features)b::text[]::jsonb[], %(input)b::text[]::jsonb[],
        %(metadata)b::text[]::jsonb[], %(audit)b::bool[], %(created_at)b::timestamptz[],
        %(embedding)b::bytea[]) AS rows (external_id, model_version_id, label, confidence, probabilities,
        least_confidence, margin, entropy, features, input, metadata, audit, created_at, embedding)
), claimed AS (
    INSERT INTO flywheel_predictionkey (project_id, external_id, prediction_id, created_at)
    SELECT %(project)b, external_id, id, created_at FROM rows
    ON CONFLICT (project_id, external_id) DO NOTHING
    RETURNING prediction_id
), inserted AS (
    INSERT INTO flywheel_prediction (
        id, project_id, batch_id, received_at, external_id, model_version_id, label, confidence, probabilities,
        least_confidence, margin, entropy, features, input, metadata, audit, created_at, embedding)
    SELECT rows.id, %(project)b, batch.id, %(now)b, rows.external_id, rows.model_version_id, rows.label,
        rows.confidence, rows.probabilities, rows.least_confidence, rows.margin, rows.entropy, rows.features,
        rows.input, rows.metadata, rows.audit, rows.created_at, rows.embedding
    FROM batch, rows JOIN claimed ON claimed.prediction_id = rows.id
    RETURNING external_id, id, created_at
), recorded AS (
    INSERT INTO flywheel_ingestbatch (id, project_id, received_at, first_prediction_id, last_prediction_id,
                                      first_created_at, last_created_at)
    SELECT batch.id, %(project)b, %(now)b, min(inserted.id), max(inserted.id), min(inserted.created_at),
        max(inserted.created_at)
    FROM batch, inserted GROUP BY batch.id
)
SELECT external_id, id FROM inserted
"""


def _predictions_insert_postgres(project, items, scores, draws, policy, version_ids, now):
    empty = "{}"
    params = {
        "project": project.pk, "now": now,
        "external_id": [item.external_id for item in items],
        "model_version": [version_ids[item.model_version] for item in items],
        "label": [item.label for item in items],
        "confidence": [item.confidence for item in items],
        "probabilities": [_json(item.probabilities) for item in items],
        "least_confidence": [score.least_confidence for score in scores],
        "margin": [score.margin for score in scores],
        "entropy": [score.entropy for score in scores],
        "features": [_json(item.features) if item.features else empty for item in items],
        "input": [_json(item.input) if item.input else empty for item in items],
        "metadata": [_json(item.metadata) if item.metadata else empty for item in items],
        "audit": [draw < policy.audit_rate for draw in draws],
        "created_at": [item.created_at or now for item in items],
        "embedding": [item.embedding for item in items],
    }
    connection.ensure_connection()
    # Server-side binding with binary arrays: one parameter per column whatever the batch
    # size, and no per-element quoting in Python (Django's client-side binding would). The
    # statement text never changes, so it is prepared once per connection.
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(_INSERT_SQL, params, prepare=True)
        return dict(cursor.fetchall())


def budget_take(*, project: Project, day, wanted: int, limit: int) -> int:
    """Take up to `wanted` slots of today's budget (uncertainty and disagreement tasks);
    returns how many were granted. The row lock serializes concurrent requests of one
    project only while they route."""
    if wanted <= 0:
        return 0
    RoutingBudget.objects.get_or_create(project=project, day=day)
    budget = RoutingBudget.objects.select_for_update().get(project=project, day=day)
    granted = max(0, min(wanted, limit - budget.used))
    if granted:
        RoutingBudget.objects.filter(pk=budget.pk).update(used=budget.used + granted)
    return granted


def _stored_outcomes(*, project: Project, external_ids: list[str], policy) -> dict[str, dict]:
    """What a retried prediction gets back: the routing recorded when it was first stored."""
    if not external_ids:
        return {}
    rows = Prediction.objects.filter(project=project, external_id__in=external_ids).values_list(
        "external_id", "id", policy.uncertainty
    )
    stored = {external_id: pk for external_id, pk, _ in rows}
    scores = {pk: score for _, pk, score in rows}
    tasks = labeling_selectors.routing_tasks_for_predictions(stored.values(), reasons=ROUTING_REASONS)
    out = {}
    for external_id, pk in stored.items():
        task = tasks.get(pk)
        if task is not None:
            out[external_id] = {"routed": True, "reason": task.reason, "task_id": task.pk}
        else:
            # Not routed then: say why, from its stored uncertainty and today's policy.
            reason = routing.Reason.BUDGET_EXHAUSTED if scores[pk] >= policy.threshold else routing.Reason.CONFIDENT
            out[external_id] = {"routed": False, "reason": reason, "task_id": None}
    return out


# --- Feedback -------------------------------------------------------------------------------------


@dataclass
class FeedbackResult:
    created: int = 0
    duplicates: int = 0
    resolved: int = 0
    routed: dict[str, int] = field(default_factory=dict)


def feedback_ingest(*, project: Project, items: list[FeedbackInput], batch: bool,
                    now: datetime | None = None) -> FeedbackResult:
    """Store end users' feedback and act on it: rule out rejected labels, resolve labels the
    project's feedback policy trusts, and route conflicts and rejects to the queue. Each
    affected prediction is decided again from all its feedback, so running this twice for
    the same feedback (a retried request) changes nothing."""
    now = now or timezone.now()
    wanted = {item.prediction_id for item in items}
    with transaction.atomic():
        # Locked in id order: concurrent feedback on a prediction is decided one after another.
        predictions = {p.external_id: p for p in Prediction.objects.select_for_update().filter(
            project=project, external_id__in=wanted).order_by("id").only(
            "id", "external_id", "label", "probabilities", "least_confidence", "margin", "entropy")}
        missing = [i for i, item in enumerate(items) if item.prediction_id not in predictions]
        if missing:
            if not batch:
                raise NotFound("prediction_not_found", f"No prediction '{items[0].prediction_id}' in this project.")
            fields = {f"feedback[{i}].prediction_id": ["No such prediction in this project."] for i in missing[:50]}
            raise DomainError("invalid", validation_message(fields), fields=fields)
        known = set(Feedback.objects.filter(project=project, external_id__in=[
            i.external_id for i in items if i.external_id]).values_list("external_id", flat=True))
        result = FeedbackResult()
        fresh, seen = [], set()
        for item in items:
            if item.external_id and (item.external_id in known or item.external_id in seen):
                result.duplicates += 1
                continue
            seen.add(item.external_id)
            fresh.append(item)
        Feedback.objects.bulk_create([
            Feedback(project=project, prediction=predictions[i.prediction_id], external_id=i.external_id, kind=i.kind,
                     label=i.label, user=i.user, created_at=i.created_at or now) for i in fresh
        ], ignore_conflicts=True)
        result.created = len(fresh)
        touched = [predictions[pid] for pid in sorted({i.prediction_id for i in fresh})]
        _feedback_act(project=project, predictions=touched, result=result)
    log.info("feedback.stored", project=project.slug, created=result.created, duplicates=result.duplicates,
             resolved=result.resolved, routed=sum(result.routed.values()))
    return result


def _feedback_act(*, project: Project, predictions: list[Prediction], result: FeedbackResult) -> None:
    if not predictions:
        return
    ids = [p.pk for p in predictions]
    policy = FeedbackPolicy.from_dict(project.feedback)
    routing_policy = routing.RoutingPolicy.from_dict(project.routing)
    signals: dict[int, list[Signal]] = {pid: [] for pid in ids}
    labels_of = {p.pk: p.label for p in predictions}
    for pid, kind, label, user in Feedback.objects.filter(prediction_id__in=ids).order_by("created_at", "id") \
            .values_list("prediction_id", "kind", "label", "user"):
        signals[pid].append(Signal(kind=kind, label=label if kind == "correct" else labels_of[pid], user=user))
    current = labeling_selectors.current_labels(ids)
    ruled_out = labeling_selectors.ruled_out_labels(ids)
    queued = labeling_selectors.predictions_in_queue(ids)
    rule_out_pairs, tasks, resolved = [], [], []
    for prediction in predictions:
        label = current.get(prediction.pk)
        decision = decide_feedback(
            predicted=prediction.label, probabilities=prediction.probabilities, signals=signals[prediction.pk],
            current_label=label.label if label else None, current_source=label.source if label else None,
            ruled_out=ruled_out.get(prediction.pk, set()), policy=policy,
        )
        rule_out_pairs += [(prediction.pk, lab) for lab in decision.rule_out - ruled_out.get(prediction.pk, set())]
        if decision.resolve is not None:
            labeling_services.label_resolve(project_id=project.pk, prediction_id=prediction.pk,
                                            label=decision.resolve, source="feedback")
            result.resolved += 1
            resolved.append(prediction.pk)
        if decision.route is not None and prediction.pk not in queued:
            score = prediction.uncertainty_score(routing_policy.uncertainty)
            tasks.append(labeling_services.TaskSpec(prediction.pk, decision.route,
                                                    routing.task_priority(decision.route, score)))
            result.routed[decision.route] = result.routed.get(decision.route, 0) + 1
    labeling_services.labels_rule_out(pairs=rule_out_pairs)
    if routing_policy.skip_resolved:
        labeling_services.tasks_cancel_resolved(prediction_ids=resolved)
    labeling_services.tasks_create(project_id=project.pk, specs=tasks,
                                   annotations_required=routing_policy.annotations_per_task)


def ingest_metrics_record(*, project, result: IngestResult, batch: bool, size: int, started: float) -> None:
    """Prometheus figures of one ingestion request, from the API view or the gateway."""
    metrics.INGEST_SECONDS.labels("batch" if batch else "single").observe(time.perf_counter() - started)
    metrics.INGEST_BATCH_SIZE.observe(size)
    metrics.PREDICTIONS_INGESTED.labels(project.slug, "created").inc(result.created)
    if result.duplicates:
        metrics.PREDICTIONS_INGESTED.labels(project.slug, "duplicate").inc(result.duplicates)
    for reason, count in result.routed.items():
        metrics.PREDICTIONS_ROUTED.labels(project.slug, reason).inc(count)
