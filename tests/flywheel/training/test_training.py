"""Retraining inline (Celery eager): the run's stages, the gate, the registry, promotion,
rollback, triggers, external trainers, and the tasks' second runs."""

import hashlib
import hmac
import http.server
import json
import threading
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from accounts.models import AuditEvent, Role
from common.storage import get_storage
from flywheel.models import ModelAlias, ModelPromotion, ModelVersion, Project, TrainingRun
from flywheel.tasks import retraining_triggers_task, training_stage_task, training_watchdog_task
from flywheel.training import runs, triggers
from monitoring import selectors as monitoring_selectors
from monitoring.models import DriftReport
from tests import factories
from tests.flywheel.training.training_data import digits_project, log_and_label


@pytest.fixture
def inline(django_capture_on_commit_callbacks):
    """Run what the services queue on commit (the Celery tasks, eager) as it would run."""
    def run(fn, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)
    return run


@pytest.fixture
def ops(db):
    return factories.user_with_role(Role.OPS)


def _request(inline, project, trigger="manual", **kw):
    return inline(runs.training_run_request, project=project, trigger=trigger, **kw)


def test_a_run_builds_trains_judges_and_promotes_its_candidate(inline, db):
    project = digits_project()
    log_and_label(project, start=0, count=900)
    run = _request(inline, project)
    run.refresh_from_db()
    assert (run.status, run.stage, run.promoted) == ("succeeded", "done", True), run.error
    assert run.dataset_version.number == 1 and run.eval_dataset_version == run.dataset_version
    candidate = run.model_version
    assert candidate.name == "run-1" and candidate.source == "trained" and candidate.trainer == "sklearn"
    assert candidate.libraries["scikit-learn"] and len(candidate.artifact_sha256) == 64
    content = get_storage().get(f"models/digits/{candidate.artifact_sha256}.pkl")
    assert hashlib.sha256(content).hexdigest() == candidate.artifact_sha256
    sidecar = json.loads(get_storage().get(f"models/digits/{candidate.artifact_sha256}.json"))
    assert sidecar["libraries"] == candidate.libraries
    metrics = run.metrics["candidate"]
    assert metrics["accuracy"] > 0.85 and 0 <= metrics["ece"] < 0.2 and set(metrics["recall"]) == set("0123456789")
    assert run.gate["passed"] and "no champion to compare with" in run.gate["reasons"]
    assert ModelAlias.objects.get(project=project, alias="champion").model_version == candidate
    promotion = ModelPromotion.objects.get()
    assert (promotion.action, promotion.actor_name, promotion.previous) == ("promote", "gate", None)
    assert AuditEvent.objects.filter(action="model.promote").exists()
    # The champion's training data is now what drift is measured against.
    reference = monitoring_selectors.reference_current(project=project)
    assert reference.kind == "dataset_version" and reference.dataset_version == 1 and reference.model_version == "run-1"
    assert Project.objects.get(pk=project.pk).retraining["eval_dataset_version"] == 1


def _trained_scaler(inline, project):
    """A run on 600 labeled digits, and the numeric scaler inside the model it trained."""
    from flywheel.training.trainers import load_model

    log_and_label(project, start=0, count=600)
    run = _request(inline, project)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    candidate = run.model_version
    model = load_model(get_storage().get(f"models/digits/{candidate.artifact_sha256}.pkl"),
                       sha256=candidate.artifact_sha256)
    return run, model.estimator.named_steps["features"].named_transformers_["numeric"].named_steps["scale"]


def test_the_policy_chooses_how_the_built_in_trainer_scales_features(inline, db):
    from sklearn.preprocessing import MaxAbsScaler

    project = digits_project(retraining={"feature_scaling": "max_abs"})
    run, scaler = _trained_scaler(inline, project)
    assert isinstance(scaler, MaxAbsScaler) and run.metrics["candidate"]["accuracy"] > 0.85


def test_range_scaling_uses_the_ranges_the_project_declares(inline, db):
    from flywheel.training.scaling import RangeScaler

    project = digits_project(retraining={"feature_scaling": "range"})
    # Pixels run from 0 to 16; the first four are declared, the rest left to max-abs.
    project.features = [{**f, "min": 0.0, "max": 16.0} if i < 4 else f for i, f in enumerate(project.features)]
    project.save(update_fields=["features"])
    run, scaler = _trained_scaler(inline, project)
    # Pixel 0 is blank in every digit: scaled from the rows, its scale would be 1.
    assert isinstance(scaler, RangeScaler) and scaler.scale_[:4].tolist() == [16.0] * 4
    assert scaler.ranges[4] is None and run.metrics["candidate"]["accuracy"] > 0.85


def test_an_unknown_feature_scaling_is_refused_by_name(db):
    project = digits_project()
    client = factories.api_client(factories.user_with_role(Role.OPS, project)[1])
    response = client.patch("/api/v1/projects/digits/", {"retraining": {"feature_scaling": "log"}}, format="json")
    assert response.status_code == 400
    assert "feature_scaling" in str(response.json()["error"]["fields"])
    assert "feature_scaling" not in Project.objects.get(pk=project.pk).retraining


def test_a_worse_candidate_is_refused_with_its_reasons(inline, db):
    project = digits_project()
    log_and_label(project, start=0, count=900)
    first = _request(inline, project)
    first.refresh_from_db()
    # Half the labels go bad: the next model learns worse; it is judged on the same frozen rows.
    log_and_label(project, start=0, count=900, wrong_share=0.6, seed=5)
    second = _request(inline, project)
    second.refresh_from_db()
    assert second.status == "succeeded" and second.promoted is False
    assert second.gate["passed"] is False and second.eval_dataset_version.number == 1
    assert any("does not beat the champion" in r for r in second.gate["reasons"]), second.gate["reasons"]
    assert second.champion == first.model_version
    assert second.metrics["candidate"]["accuracy"] < second.metrics["champion"]["accuracy"]
    assert ModelAlias.objects.get(project=project, alias="champion").model_version == first.model_version
    assert ModelAlias.objects.get(project=project, alias="challenger").model_version == second.model_version
    assert ModelVersion.objects.filter(source="trained").count() == 2  # the refused one stays in the registry


def test_a_slice_that_regresses_is_named_in_the_reasons(inline, db):
    project = digits_project(slices=["region"], retraining={"min_slice_size": 20, "slice_tolerance": 0.02,
                                                            "min_improvement": 0.0})
    log_and_label(project, start=0, count=900, region=True)
    _request(inline, project)
    # The new labels of region eu only are wrong: the candidate gets worse there.
    from flywheel.models import Prediction
    from labeling.models import Label
    eu = Prediction.objects.filter(project=project, metadata__region="eu").values_list("id", flat=True)
    Label.objects.filter(prediction_id__in=list(eu), is_current=True).update(label="0")
    second = _request(inline, project)
    second.refresh_from_db()
    assert not second.gate["passed"]
    assert any("region=eu" in r for r in second.gate["reasons"]), second.gate["reasons"]


def test_triggers_together_share_a_run_and_one_during_a_run_is_queued(db):
    project = digits_project()
    running = TrainingRun.objects.create(project=project, number=1, status="running", trigger="manual",
                                         trainer="sklearn")
    joined = runs.training_run_request(project=project, trigger="schedule")
    assert joined.pk == running.pk and [t["trigger"] for t in joined.triggers] == ["schedule"]
    # Once the run has read its data, a new trigger waits for the next run.
    from flywheel.models import DatasetVersion
    running.dataset_version = DatasetVersion.objects.create(project=project, number=1)
    running.save()
    queued = runs.training_run_request(project=project, trigger="drift")
    again = runs.training_run_request(project=project, trigger="new_labels", details={"new_labels": 600})
    assert queued.pk == again.pk and again.status == "queued" and again.number == 2
    assert [t["trigger"] for t in again.triggers] == ["drift", "new_labels"]
    assert TrainingRun.objects.count() == 2
    # When the running one ends, the queued one starts.
    runs.training_run_fail(run_id=running.pk, reason="test")
    again.refresh_from_db()
    assert again.status == "running" and again.stage == "dataset"


def test_triggers_start_runs_on_new_labels_drift_and_schedule(db):
    project = digits_project(retraining={"min_new_labels": 100, "on_drift": True, "schedule": "daily"})
    log_and_label(project, start=0, count=50)
    assert triggers.retraining_triggers_evaluate() == [] or TrainingRun.objects.get().trigger == "schedule"
    TrainingRun.objects.all().delete()
    project.retraining = {**project.retraining, "schedule": "none"}
    project.save()
    assert triggers.retraining_triggers_evaluate() == []  # 50 labels < 100, no drift
    log_and_label(project, start=50, count=60)
    [run_id] = triggers.retraining_triggers_evaluate()
    run = TrainingRun.objects.get(pk=run_id)
    assert run.trigger == "new_labels" and run.triggers[0]["new_labels"] == 110
    run.status = "failed"
    run.save()
    assert triggers.retraining_triggers_evaluate() == []  # counted again from the last run
    now = timezone.now()
    DriftReport.objects.create(project=project, created_at=now, trigger="scheduled",
                               window_start=now - timedelta(hours=1), window_end=now, window_count=100,
                               reference_info={}, drifted=True, features=[], prediction={}, policy={},
                               duration_ms=1.0)
    [drift_run] = triggers.retraining_triggers_evaluate()
    assert TrainingRun.objects.get(pk=drift_run).trigger == "drift"
    project.retraining = {**project.retraining, "schedule": "hourly", "on_drift": False, "min_new_labels": 0}
    project.save()
    TrainingRun.objects.update(status="failed", created_at=timezone.now() - timedelta(hours=2))
    log_and_label(project, start=110, count=5)
    [scheduled] = triggers.retraining_triggers_evaluate()
    assert TrainingRun.objects.get(pk=scheduled).trigger == "schedule"


def test_the_api_runs_lists_and_shows_a_run(inline, db, ops, django_capture_on_commit_callbacks):
    project = digits_project()
    log_and_label(project, start=0, count=600)
    user, token = factories.user_with_role(Role.OPS, project)
    client = factories.api_client(token)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/v1/projects/digits/training-runs/", {}, format="json")
    assert response.status_code == 202 and response.json()["trigger"] == "manual"
    run_id = response.json()["id"]
    body = client.get(f"/api/v1/projects/digits/training-runs/{run_id}/").json()
    assert body["status"] == "succeeded" and body["gate"]["passed"] is True and body["promoted"] is True
    assert body["dataset_version"] == 1 and body["model_version"] == "run-1"
    assert [r["number"] for r in client.get("/api/v1/projects/digits/training-runs/").json()] == [1]
    models = client.get("/api/v1/projects/digits/models/").json()
    assert {m["name"]: m["aliases"] for m in models} == {"run-1": ["champion"], "v1": []}
    assert client.post("/api/v1/projects/digits/training-runs/", {"dataset_version": 9},
                       format="json").status_code == 404
    assert client.get("/api/v1/projects/digits/training-runs/999/").status_code == 404
    # Its id and its number in the project are named apart wherever a run is named.
    promotion = client.get("/api/v1/projects/digits/models/promotions/").json()[0]
    assert promotion["training_run_id"] == run_id and promotion["training_run_number"] == 1
    event = AuditEvent.objects.filter(action="training.request").get()
    assert event.target == "run #1" and event.details["run_id"] == run_id and event.details["run_number"] == 1


def test_promote_and_rollback_by_hand(inline, db):
    project = digits_project()
    log_and_label(project, start=0, count=600)
    first = _request(inline, project)
    first.refresh_from_db()
    log_and_label(project, start=600, count=300)
    project.retraining = {**project.retraining, "min_improvement": 0.5}  # nothing passes this gate
    project.save()
    second = _request(inline, project)
    second.refresh_from_db()
    assert not second.promoted
    _, token = factories.user_with_role(Role.OPS, project)
    client = factories.api_client(token)
    with_reason = {"reason": "looked at the confusion matrix"}
    promoted = inline(client.post, f"/api/v1/projects/digits/models/{second.model_version.name}/promote/",
                      with_reason, format="json")
    assert promoted.status_code == 200 and promoted.json()["previous"] == "run-1"
    assert monitoring_selectors.reference_current(project=project).dataset_version == 2
    assert client.post("/api/v1/projects/digits/models/run-2/promote/", {}, format="json").status_code == 409
    rolled = inline(client.post, "/api/v1/projects/digits/models/rollback/", {}, format="json")
    assert rolled.status_code == 200 and rolled.json()["model_version"] == "run-1"
    assert rolled.json()["action"] == "rollback" and rolled.json()["actor"].startswith("ops")
    assert ModelAlias.objects.get(alias="champion").model_version.name == "run-1"
    assert monitoring_selectors.reference_current(project=project).dataset_version == 1
    history = client.get("/api/v1/projects/digits/models/promotions/").json()
    assert [h["action"] for h in history] == ["rollback", "promote", "promote"]
    assert AuditEvent.objects.filter(action="model.rollback").count() == 1
    again = client.post("/api/v1/projects/digits/models/rollback/", {}, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "nothing_to_roll_back"


def test_a_run_that_cannot_train_fails_with_its_reason_and_the_queue_moves_on(inline, db):
    project = digits_project()
    ids = log_and_label(project, start=0, count=100)
    from labeling.models import Label
    Label.objects.filter(prediction_id__in=ids).update(label="3")  # one label only: nothing to learn
    run = _request(inline, project)
    run.refresh_from_db()
    assert run.status == "failed" and "two different labels" in run.error and run.stage == "train"
    assert not ModelAlias.objects.exists()


def test_stage_tasks_triggers_and_watchdog_are_no_ops_when_run_again(inline, db):
    project = digits_project()
    log_and_label(project, start=0, count=600)
    run = _request(inline, project)
    run.refresh_from_db()
    before = (ModelVersion.objects.count(), ModelPromotion.objects.count(), run.updated_at)
    for stage in ("dataset", "train", "evaluate", "gate", "promote"):
        inline(training_stage_task.delay, run.pk, stage)
    run.refresh_from_db()
    assert (ModelVersion.objects.count(), ModelPromotion.objects.count(), run.updated_at) == before
    assert retraining_triggers_task.delay().get() == []
    assert retraining_triggers_task.delay().get() == []
    assert training_watchdog_task.delay().get() == []


def test_the_watchdog_requeues_a_dead_stage_and_fails_a_run_that_keeps_dying(inline, db, settings):
    project = digits_project()
    log_and_label(project, start=0, count=600)
    run = TrainingRun.objects.create(project=project, number=1, status="running", stage="dataset", trigger="manual",
                                     trainer="sklearn", token="dead-worker", attempts=1,
                                     heartbeat_at=timezone.now() - timedelta(hours=1))
    assert inline(runs.training_watchdog) == [run.pk]
    run.refresh_from_db()
    assert run.status == "succeeded" and run.promoted  # picked up again and finished, once
    assert ModelVersion.objects.filter(source="trained").count() == 1
    stuck = TrainingRun.objects.create(project=project, number=2, status="running", stage="train", trigger="manual",
                                       trainer="sklearn", token="dead-again", attempts=6,
                                       heartbeat_at=timezone.now() - timedelta(hours=1))
    assert runs.training_watchdog() == []
    stuck.refresh_from_db()
    assert stuck.status == "failed" and "died 6 times" in stuck.error


def test_the_watchdog_resends_a_stage_whose_message_was_lost(inline, db):
    """The broker restarted empty (or was away) after the stage was queued: no worker ever
    claimed it. The watchdog sends it again once the run has been quiet past any retry's
    backoff, and not before: a retry chain still sleeping is not doubled."""
    project = digits_project()
    log_and_label(project, start=0, count=600)
    quiet_for = timedelta(seconds=runs.STAGE_BACKOFF_MAX_SECONDS) + runs.LEASE.stale_after()
    run = TrainingRun.objects.create(project=project, number=1, status="running", stage="dataset", trigger="manual",
                                     trainer="sklearn")
    TrainingRun.objects.filter(pk=run.pk).update(updated_at=timezone.now() - quiet_for / 2)
    assert inline(runs.training_watchdog) == []
    TrainingRun.objects.filter(pk=run.pk).update(updated_at=timezone.now() - quiet_for - timedelta(seconds=5))
    assert inline(runs.training_watchdog) == [run.pk]
    run.refresh_from_db()
    assert run.status == "succeeded" and run.promoted
    assert inline(runs.training_watchdog) == []


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - the http.server interface
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args):
        pass


@override_settings(FLYWHEEL_WEBHOOK_ALLOW_LOOPBACK=True)
def test_an_external_trainer_gets_the_manifest_and_reports_back(inline, db):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.received = []
    try:
        project = digits_project(retraining={"trainer": "external", "external_secret": "s3cret",
                                             "external_url": f"http://127.0.0.1:{server.server_port}/train"})
        log_and_label(project, start=0, count=600)
        run = _request(inline, project)
        run.refresh_from_db()
        assert (run.status, run.stage) == ("running", "waiting")
        [(headers, body)] = _Receiver.received
        payload = json.loads(body)
        assert payload["manifest_uri"] == run.dataset_version.manifest_uri and payload["evaluation"]["split"] == "test"
        expected = hmac.new(b"s3cret", f"{headers['X-Flywheel-Timestamp']}.".encode() + body,
                            hashlib.sha256).hexdigest()
        assert headers["X-Flywheel-Signature"] == f"sha256={expected}"
        # The trainer answers with its model and what it predicts for each evaluation row.
        from flywheel.datasets.selectors import version_partitions
        rows = [r for t in version_partitions(version=run.dataset_version, split="test")
                for r in zip(t.column("row_id").to_pylist(), t.column("label").to_pylist(), strict=True)]
        _, token = factories.user_with_role(Role.APP, project)
        client = factories.api_client(token)
        report = {"model_version": "ext-1", "artifact_uri": "s3://models/ext-1.onnx", "metrics": {"accuracy": 0.99},
                  "predictions": {str(row_id): label for row_id, label in rows}}
        response = inline(client.post, f"/api/v1/training-runs/{run.pk}/complete/", report, format="json")
        assert response.status_code == 200, response.json()
        run.refresh_from_db()
        assert run.status == "succeeded" and run.promoted and run.model_version.name == "ext-1"
        assert run.metrics["candidate"]["accuracy"] == 1.0
        late = client.post(f"/api/v1/training-runs/{run.pk}/complete/", report, format="json")
        assert late.status_code == 409
    finally:
        server.shutdown()


def test_policy_validation(db):
    _, token = factories.user_with_role(Role.OPS)
    client = factories.api_client(token)
    body = {"slug": "p", "name": "P", "labels": ["a", "b"]}
    bad_trainer = client.post("/api/v1/projects/", {**body, "retraining": {"trainer": "magic"}}, format="json")
    assert bad_trainer.status_code == 400 and "retraining.trainer" in bad_trainer.json()["error"]["fields"]
    bad_url = client.post("/api/v1/projects/", {**body, "retraining": {"external_url": "ftp://x"}}, format="json")
    assert bad_url.status_code == 400 and "retraining.external_url" in bad_url.json()["error"]["fields"]
    ok = client.post("/api/v1/projects/", {**body, "retraining": {"external_secret": "hidden"}}, format="json")
    assert ok.json()["retraining"]["external_secret"] == "(set)"


def test_gold_answers_are_judged_on_but_never_trained_on(inline, db, monkeypatch):
    from flywheel.models import Prediction
    from flywheel.training.trainers import SklearnTrainer
    from labeling.services import gold_answer_set

    project = digits_project()
    ids = log_and_label(project, start=0, count=600)
    gold_ids = ids[:80]
    for prediction in Prediction.objects.filter(pk__in=gold_ids):
        gold_answer_set(project=project, prediction=prediction, label=prediction.resolved_labels.get(
            is_current=True).label)
    trained_on = []
    original = SklearnTrainer.train

    def spy(self, data, *, seed=0):
        trained_on.append(len(data.labels))
        return original(self, data, seed=seed)

    monkeypatch.setattr(SklearnTrainer, "train", spy)
    run = _request(inline, project)
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert run.metrics["evaluation_set"]["gold"] > 0
    train_rows = run.dataset_version.counts["by_split"]["train"]
    assert trained_on[0] < train_rows  # the gold rows of the train split were left out


def test_a_project_with_everything_in_it_can_be_deleted(inline, db):
    project = digits_project()
    log_and_label(project, start=0, count=300)
    _request(inline, project)
    assert ModelPromotion.objects.exists()
    project.delete()
    assert not Project.objects.exists() and not ModelVersion.objects.exists()
    # A model version that served predictions cannot be deleted on its own.
    other = digits_project(slug="other")
    log_and_label(other, start=0, count=10)
    from django.db.models import RestrictedError

    with pytest.raises(RestrictedError):
        ModelVersion.objects.get(project=other, name="v1").delete()
