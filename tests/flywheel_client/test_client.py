"""flywheel_client against the running service (gunicorn, uvicorn workers, the gateway), and
its retry rules against a server that fails on purpose."""

import http.server
import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from accounts.models import Role
from flywheel.models import Feedback, Prediction
from flywheel.projects import project_update
from flywheel.training.trainers import load_model
from flywheel_client import Client, FlywheelError
from labeling.models import Label
from tests import factories
from tests.flywheel.training.training_data import FEATURES, digits, digits_project
from tests.live import ROOT, LiveService


def test_the_client_imports_without_django():
    code = "import sys, flywheel_client; assert not any(m.startswith('django') for m in sys.modules), 'django'"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def _digit_predictions(start: int, count: int, *, confidence: float) -> list[dict]:
    x, y, _ = digits(start, count)
    return [{"model_version": "v1", "label": str((int(truth) + 1) % 10), "confidence": confidence,
             "features": {name: float(v) for name, v in zip(FEATURES, pixels, strict=True)}}
            for pixels, truth in zip(x, y, strict=True)]


@pytest.mark.django_db(transaction=True)
def test_an_app_an_annotator_and_ops_work_the_loop_through_the_client(tmp_path):
    project = digits_project(retraining={"min_improvement": 0.0})
    project = project_update(project=project, changes={"routing": {"threshold": 0.5, "daily_budget": 100_000}})
    app_token = factories.user_with_role(Role.APP, project)[1]
    annotator_token = factories.user_with_role(Role.ANNOTATOR, project)[1]
    ops_token = factories.user_with_role(Role.OPS, project)[1]
    _, truth, _ = digits(0, 260)

    with LiveService(workers=2, FLYWHEEL_STORAGE_ROOT=tmp_path / "storage") as service:
        app, annotator, ops = (Client(service.url, t) for t in (app_token, annotator_token, ops_token))

        # Logging: batches of 100, ids made by the client; low confidence is routed.
        items = _digit_predictions(0, 250, confidence=0.2)
        summary = app.log_predictions("digits", items, batch_size=100)
        assert (summary.created, summary.duplicates, len(summary.results)) == (250, 0, 250)
        ids = [r["id"] for r in summary.results]
        assert len(set(ids)) == 250 and all(r["routed"] and r["reason"] == "low_confidence" for r in summary.routed)
        # Sending the same predictions again, with their ids, creates nothing twice.
        again = app.log_predictions("digits", [{"id": i, **p} for i, p in zip(ids[:30], items[:30], strict=True)])
        assert (again.created, again.duplicates) == (0, 30)
        one = app.log_prediction("digits", **_digit_predictions(250, 1, confidence=0.95)[0])
        assert one["routed"] is False and app.prediction("digits", one["id"])["label"]

        # End users: a correction and a confirmation.
        fed = app.feedback("digits", [{"prediction_id": ids[0], "kind": "correct", "label": truth[0], "user": "u1"},
                                      {"prediction_id": ids[1], "kind": "confirm", "user": "u2"}])
        assert fed["created"] == 2 and fed["duplicates"] == 0

        # An annotator works the queue: label, undo, skip, release, and the rest labeled truly.
        task = annotator.next_task("digits")
        assert annotator.heartbeat(task["id"])["lease_expires_at"]
        answers = dict(zip(ids, truth, strict=False))
        annotator.annotate(task["id"], "0", lead_time_s=2.5)
        assert annotator.undo(task["id"])["id"] == task["id"]  # leased back to label again
        annotator.annotate(task["id"], answers[task["prediction"]["id"]])
        skipped = annotator.next_task("digits")
        annotator.skip(skipped["id"])
        released = annotator.next_task("digits")
        annotator.release(released["id"])
        labeled = 1
        while (task := annotator.next_task("digits")) is not None:
            annotator.annotate(task["id"], answers[task["prediction"]["id"]])
            labeled += 1
        assert labeled >= 240
        assert annotator.tasks("digits", status="done")["count"] == labeled

        # Ops: stats, a drift check, a dataset version, a training run, the registry.
        stats = ops.stats("digits")
        assert stats["queue"]["total"] == 1  # the task this annotator skipped waits for someone else
        assert sum(day["total"] for day in stats["labels_per_day"]) >= labeled
        report = ops.drift_check("digits")
        assert report["id"] and ops.drift_reports("digits")[0]["id"] == report["id"]
        dataset = ops.create_dataset("digits", note="from the client")
        assert ops.dataset("digits", dataset["version"])["version"] == dataset["version"]
        assert [d["version"] for d in ops.datasets("digits")] == [dataset["version"]]
        run = ops.wait_for_training_run("digits", ops.train("digits")["id"], timeout=120)
        assert run["status"] == "succeeded" and run["promoted"], run
        champion = ops.champion("digits")
        assert champion["name"] == f"run-{run['number']}"
        content, sha256 = ops.model_artifact("digits", champion["name"])
        model = load_model(content, sha256=sha256)
        x, y, _ = digits(1000, 200)
        labels, _ = model.predict(x, np.empty((len(x), 0), dtype=object))
        assert np.mean(np.array(labels) == y) > 0.8
        assert ops.promote("digits", "v1", reason="checking")["model_version"] == "v1"
        assert ops.rollback("digits", reason="back")["model_version"] == champion["name"]
        assert ops.update_project("digits", routing={"audit_rate": 0.1})["routing"]["audit_rate"] == 0.1

        # Refusals carry the server's code, message and fields, and are not retried.
        with pytest.raises(FlywheelError) as refused:
            app.log_predictions("digits", [{"model_version": "v1", "label": "3", "confidence": 4}])
        assert refused.value.status == 400 and "predictions[0].confidence" in str(refused.value.fields)
        with pytest.raises(FlywheelError) as forbidden:
            annotator.train("digits")
        assert forbidden.value.status == 403
        with pytest.raises(FlywheelError) as unknown:
            Client(service.url, "not-a-token").projects()
        assert unknown.value.status == 401

    assert Prediction.objects.count() == 251 and Feedback.objects.count() == 2
    assert Label.objects.filter(is_current=True, source="annotation").count() >= 240


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    """Answers from a script: each request takes the next (status, body, headers)."""

    def do_POST(self):  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length", 0))
        self.server.seen.append((self.path, json.loads(self.rfile.read(length) or b"null")))
        status, body, headers = self.server.script.pop(0)
        if status == 0:  # drop the connection without an answer
            self.close_connection = True
            self.connection.shutdown(2)
            return
        payload = json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyHandler)
    server.seen, server.script = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _client(server, **kw) -> Client:
    return Client(f"http://127.0.0.1:{server.server_port}", "token", backoff=0.01, max_backoff=0.05, **kw)


ACCEPTED = {"created": 1, "duplicates": 0, "results": [{"id": "x", "routed": False, "reason": None}]}


def test_overload_and_unavailability_are_retried_with_the_same_ids(flaky):
    flaky.script = [(503, {"error": {"code": "unavailable", "message": "db"}}, {}),
                    (429, {"error": {"code": "throttled", "message": "slow"}}, {"Retry-After": "0"}),
                    (201, ACCEPTED, {})]
    summary = _client(flaky).log_predictions("p", [{"model_version": "v1", "label": "1", "confidence": 0.5}])
    assert summary.created == 1 and len(flaky.seen) == 3
    sent_ids = {body["predictions"][0]["id"] for _, body in flaky.seen}
    assert len(sent_ids) == 1  # a retry repeats the request, ids and all: the server deduplicates


def test_a_lost_answer_is_retried_only_where_repeating_is_harmless(flaky):
    flaky.script = [(0, None, {}), (201, ACCEPTED, {})]
    assert _client(flaky).log_predictions("p", [{"model_version": "v1", "label": "1"}]).created == 1
    # An annotation is not repeated after the request may have reached the server.
    flaky.seen.clear()
    flaky.script = [(0, None, {}), (201, {"task": None}, {})]
    with pytest.raises(FlywheelError) as failed:
        _client(flaky).annotate(7, "3")
    assert failed.value.status == 0 and failed.value.code == "connection_failed" and len(flaky.seen) == 1


def test_a_refusal_is_never_retried_and_retries_end(flaky):
    flaky.script = [(400, {"error": {"code": "invalid", "message": "bad", "fields": {"label": ["unknown"]}}}, {})]
    with pytest.raises(FlywheelError) as refused:
        _client(flaky).log_predictions("p", [{"model_version": "v1", "label": "?"}])
    assert (refused.value.status, refused.value.code, refused.value.fields) == (400, "invalid", {"label": ["unknown"]})
    assert len(flaky.seen) == 1
    flaky.seen.clear()
    flaky.script = [(503, {"error": {"code": "unavailable", "message": "db"}}, {})] * 3
    with pytest.raises(FlywheelError) as unavailable:
        _client(flaky, max_retries=2).stats("p")
    assert unavailable.value.status == 503 and len(flaky.seen) == 3


def test_nothing_listening_fails_after_the_retries():
    client = Client("http://127.0.0.1:9", "token", max_retries=2, backoff=0.01)
    with pytest.raises(FlywheelError) as failed:
        client.log_predictions("p", [{"model_version": "v1", "label": "1"}])
    assert failed.value.status == 0 and "ConnectionRefused" in failed.value.message
    with pytest.raises(ValueError):
        Client("ftp://example", "token")
    with pytest.raises(ValueError):
        client.log_predictions("p", [], batch_size=20_000)


@pytest.mark.django_db(transaction=True)
def test_groups_are_built_fixed_and_labeled_through_the_client():
    project = factories.project(labeling={"gold_rate": 0.0, "grouping": {"target_size": 12}})
    app_token = factories.user_with_role(Role.APP, project)[1]
    annotator_token = factories.user_with_role(Role.ANNOTATOR, project)[1]
    reviewer_token = factories.user_with_role(Role.REVIEWER, project)[1]
    rng = np.random.default_rng(0)
    centres = {"3": [1.0, 0.0, 0.0], "7": [0.0, 1.0, 0.0]}
    items = [factories.prediction(i, label=digit, confidence=0.3,
                                  embedding=(np.asarray(centres[digit]) + rng.normal(0, 0.05, 3)).tolist())
             for i, digit in enumerate(["3"] * 6 + ["7"] * 6)]

    with LiveService() as service:
        app, annotator, reviewer = (Client(service.url, t) for t in (app_token, annotator_token, reviewer_token))
        app.log_predictions("digits", items)
        # One group per model label: the 3s and the 7s.
        assert reviewer.build_groups("digits") == {"groups": 2, "grouped_tasks": 12, "ungrouped_tasks": 0}
        group = annotator.next_group("digits")
        assert group["size"] == 6 and annotator.group_heartbeat(group["id"])["lease_expires_at"]
        (other,) = [g["id"] for g in annotator.groups("digits", status="open")["results"]]
        merged = annotator.merge_groups(group["id"], other)
        assert merged["size"] == 12
        threes, sevens = sorted(annotator.split_group(merged["id"]), key=lambda g: g["suggested_label"])
        assert (threes["suggested_label"], sevens["suggested_label"]) == ("3", "7")
        assert annotator.release_group(sevens["id"])["group"]["status"] == "open"
        # Only open tasks are similar candidates: the released 7s, nearest first.
        similar = annotator.similar_tasks(sevens["members"][0]["task_id"], k=3)
        assert len(similar) == 3 and [s["distance"] for s in similar] == sorted(s["distance"] for s in similar)
        assert {s["prediction"]["label"] for s in similar} == {"7"}
        odd = threes["members"][0]["task_id"]
        assert annotator.annotate_group(threes["id"], "3", exclude=[odd], lead_time_s=6.0) == {
            "labeled": 5, "returned": 1}
        assert annotator.groups("digits", status="done")["count"] == 1
        with pytest.raises(FlywheelError) as lost:
            annotator.annotate_group(threes["id"], "3")
        assert lost.value.status == 409
    assert Label.objects.filter(source="group", label="3").count() == 5


@pytest.mark.django_db(transaction=True)
def test_an_app_logs_a_challengers_answers_and_ops_read_the_comparison(tmp_path):
    from tests.flywheel.training.shadow_data import trained

    project = digits_project()
    project = project_update(project=project, changes={"routing": {"daily_budget": 100_000}})
    app_token = factories.user_with_role(Role.APP, project)[1]
    ops_token = factories.user_with_role(Role.OPS, project)[1]
    trained(project, "cand", start=0, count=300)
    with LiveService(workers=1, FLYWHEEL_STORAGE_ROOT=tmp_path / "storage") as service:
        app, ops = Client(service.url, app_token), Client(service.url, ops_token)
        ids = [r["id"] for r in app.log_predictions("digits", _digit_predictions(0, 40, confidence=0.95)).results]
        answers = [{"prediction_id": pid, "model_version": "rc-1", "label": "3" if n % 2 else "4",
                    "confidence": 0.8} for n, pid in enumerate(ids)]
        first = app.log_shadow_predictions("digits", answers, batch_size=15)
        assert (first["created"], first["duplicates"], len(first["results"])) == (40, 0, 40)
        again = app.log_shadow_predictions("digits", answers)
        assert (again["created"], again["duplicates"]) == (0, 40)
        assert [r["task_id"] for r in again["results"]] == [r["task_id"] for r in first["results"]]
        comparison = ops.shadow("digits", "rc-1")
        assert comparison["paired"] == 40 and comparison["verdict"] == "undecided"
        assert ops.shadow_start("digits", "cand", reason="try")["state"] == "active"
        assert ops.shadow_stop("digits", "cand")["state"] == "stopped"
        with pytest.raises(FlywheelError) as refused:
            app.log_shadow_predictions("digits", [{**answers[0], "model_version": "v1"}])
        assert refused.value.status == 400
