"""Prediction ingestion and routing through the API (docs/api.md: Predictions)."""

import base64
import io
import threading

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from PIL import Image

from accounts.models import Role
from flywheel.models import IngestBatch, ModelVersion, Prediction, Project, RoutingBudget
from labeling.models import Task
from tests import factories
from tests.factories import prediction

URL = "/api/v1/projects/digits/predictions/"


def post(client, body, url=URL):
    return client.post(url, body, format="json")


def png_base64(size=(8, 8)) -> str:
    buffer = io.BytesIO()
    Image.new("L", size, color=128).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# --- The happy path -------------------------------------------------------------------------


def test_single_prediction_is_stored_and_routed_when_uncertain(app_client, project):
    response = post(app_client, prediction(1, confidence=0.41))
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["created"] == 1 and body["duplicates"] == 0
    (result,) = body["results"]
    assert result["id"] == "p-1" and result["routed"] is True and result["reason"] == "low_confidence"
    task = Task.objects.get(pk=result["task_id"])
    assert task.prediction.external_id == "p-1" and task.reason == "low_confidence" and task.status == "open"
    assert task.priority == pytest.approx(0.59)
    stored = Prediction.objects.get(external_id="p-1")
    assert stored.least_confidence == pytest.approx(0.59) and stored.model_version.name == "v1"


def test_confident_prediction_is_stored_but_not_routed(app_client, project):
    body = post(app_client, prediction(2, confidence=0.95)).json()
    assert body["results"] == [{"id": "p-2", "routed": False, "reason": "confident", "task_id": None,
                                "duplicate": False}]
    assert Task.objects.count() == 0 and Prediction.objects.count() == 1


def test_batch_returns_one_result_per_prediction_in_request_order(app_client, project):
    items = [prediction(i, confidence=0.5 if i % 3 == 0 else 0.99) for i in range(30)]
    body = post(app_client, {"predictions": items}).json()
    assert body["created"] == 30
    assert [r["id"] for r in body["results"]] == [f"p-{i}" for i in range(30)]
    assert [r["routed"] for r in body["results"]] == [i % 3 == 0 for i in range(30)]
    assert Task.objects.count() == 10
    assert IngestBatch.objects.count() == 1


def test_prediction_without_id_gets_a_server_id(app_client, project):
    body = post(app_client, {"model_version": "v1", "label": "3", "confidence": 0.9}).json()
    assert len(body["results"][0]["id"]) == 32
    assert Prediction.objects.filter(external_id=body["results"][0]["id"]).exists()


def test_confidence_comes_from_probabilities_and_margin_routing_uses_them(app_client, project):
    Project.objects.filter(pk=project.pk).update(routing={**project.routing, "uncertainty": "margin",
                                                            "threshold": 0.9})
    close = prediction(1, confidence=None, probabilities={"7": 0.41, "1": 0.38, "9": 0.21}, label="7")
    clear = prediction(2, confidence=None, probabilities={"7": 0.9, "1": 0.05, "9": 0.05}, label="7")
    close.pop("confidence"), clear.pop("confidence")
    body = post(app_client, {"predictions": [close, clear]}).json()
    assert [r["routed"] for r in body["results"]] == [True, False]
    stored = Prediction.objects.get(external_id="p-1")
    assert stored.confidence == pytest.approx(0.41) and stored.margin == pytest.approx(0.97)


def test_entropy_routing(app_client, project):
    Project.objects.filter(pk=project.pk).update(routing={**project.routing, "uncertainty": "entropy",
                                                            "threshold": 0.5})
    flat = {str(i): 0.1 for i in range(10)}
    peaked = {"1": 0.98, "2": 0.02}
    body = post(app_client, {"predictions": [
        prediction(1, label="1", confidence=0.1, probabilities=flat),
        prediction(2, label="1", confidence=0.98, probabilities=peaked),
    ]}).json()
    assert [r["routed"] for r in body["results"]] == [True, False]


def test_audit_sample_is_routed_whatever_the_confidence(app_client, project):
    Project.objects.filter(pk=project.pk).update(routing={**project.routing, "audit_rate": 0.1})
    items = [prediction(i, confidence=0.999) for i in range(2000)]
    body = post(app_client, {"predictions": items}).json()
    audited = [r for r in body["results"] if r["routed"]]
    assert {r["reason"] for r in audited} == {"audit"}
    assert 150 <= len(audited) <= 250  # 10% of 2000, drawn at random
    assert Prediction.objects.filter(audit=True).count() == len(audited)


def test_daily_budget_caps_uncertainty_routing_but_not_the_audit_sample(app_client, project):
    Project.objects.filter(pk=project.pk).update(routing={**project.routing, "daily_budget": 5, "audit_rate": 0.05})
    items = [prediction(i, confidence=0.2 + i * 0.001) for i in range(400)]
    results = post(app_client, {"predictions": items}).json()["results"]
    low = [r for r in results if r["reason"] == "low_confidence"]
    audit = [r for r in results if r["reason"] == "audit"]
    exhausted = [r for r in results if r["reason"] == "budget_exhausted"]
    assert len(low) == 5 and len(audit) > 5 and len(low) + len(audit) + len(exhausted) == 400
    # The budget went to the most uncertain (lowest confidence) candidates.
    low_ids = sorted(int(r["id"][2:]) for r in low)
    non_audit = [i for i in range(400) if f"p-{i}" not in {r["id"] for r in audit}]
    assert low_ids == non_audit[:5]
    # The next request the same day gets no more uncertainty routing, but still audits.
    more = post(app_client, {"predictions": [prediction(i, confidence=0.1) for i in range(400, 800)]}).json()
    reasons = {r["reason"] for r in more["results"]}
    assert "low_confidence" not in reasons and "audit" in reasons
    assert RoutingBudget.objects.get(project=project).used == 5


def test_priorities_put_the_most_uncertain_first(app_client, project):
    post(app_client, {"predictions": [prediction(i, confidence=c) for i, c in enumerate([0.6, 0.2, 0.45])]})
    ordered = Task.objects.order_by("-priority").values_list("prediction__external_id", flat=True)
    assert list(ordered) == ["p-1", "p-2", "p-0"]


def test_feature_schema_is_inferred_from_the_first_predictions(app_client, db):
    factories.project(slug="inferred", features=[])
    user_token = factories.user_with_role(Role.APP, Project.objects.get(slug="inferred"))[1]
    client = factories.api_client(user_token)
    url = "/api/v1/projects/inferred/predictions/"
    response = post(client, {"predictions": [
        prediction(1, features={"size": 3, "kind": "a"}), prediction(2, features={"size": 2.5, "kind": None}),
    ]}, url)
    assert response.status_code == 201
    assert Project.objects.get(slug="inferred").features == [
        {"name": "kind", "type": "categorical"}, {"name": "size", "type": "numeric"},
    ]
    bad = post(client, prediction(3, features={"size": "big"}), url)
    assert bad.status_code == 400 and "features.size" in bad.json()["error"]["fields"]
    unknown = post(client, prediction(4, features={"weight": 1}), url)
    assert unknown.status_code == 400 and "features.weight" in unknown.json()["error"]["fields"]


def test_a_value_outside_a_declared_range_is_stored_as_sent(app_client, project):
    # The range is what training scales by; a reading past it is the drift checks' business.
    project.features = [{"name": "f0", "type": "numeric", "min": 0.0, "max": 1.0}, *project.features[1:]]
    project.save(update_fields=["features"])
    response = post(app_client, prediction(1, features={"f0": 7.5, "f1": -3.0, "color": "red"}))
    assert response.status_code == 201, response.json()
    assert Prediction.objects.get(external_id="p-1").features["f0"] == 7.5


def test_inline_image_and_text_inputs_are_stored(app_client, project):
    image = png_base64()
    response = post(app_client, prediction(1, input={"text": "hello", "image": image}))
    assert response.status_code == 201
    assert Prediction.objects.get(external_id="p-1").input == {"text": "hello", "image": image}


def test_categorical_numbers_are_kept_as_strings(app_client, project):
    post(app_client, prediction(1, features={"f0": 1, "f1": 2, "color": 17}))
    assert Prediction.objects.get(external_id="p-1").features["color"] == "17"


# --- Idempotency ------------------------------------------------------------------------------


def test_retry_creates_nothing_and_returns_the_stored_result(app_client, project):
    items = [prediction(i, confidence=0.4 if i < 3 else 0.99) for i in range(6)]
    first = post(app_client, {"predictions": items}).json()
    again = post(app_client, {"predictions": items + [prediction(6)]}).json()
    assert again["created"] == 1 and again["duplicates"] == 6
    for before, after in zip(first["results"], again["results"], strict=False):
        assert {**before, "duplicate": True} == after
    assert Prediction.objects.count() == 7 and Task.objects.count() == 3


def test_an_id_repeated_inside_one_batch_is_stored_once(app_client, project):
    body = post(app_client, {"predictions": [prediction(1, confidence=0.3), prediction(1, confidence=0.3)]}).json()
    assert body["created"] == 1 and body["duplicates"] == 1
    assert [r["duplicate"] for r in body["results"]] == [False, True]
    assert body["results"][0]["task_id"] == body["results"][1]["task_id"]


def test_retry_of_a_budget_exhausted_prediction_says_so(app_client, project):
    Project.objects.filter(pk=project.pk).update(routing={**project.routing, "daily_budget": 0})
    post(app_client, prediction(1, confidence=0.2))
    again = post(app_client, prediction(1, confidence=0.2)).json()["results"][0]
    assert again["routed"] is False and again["reason"] == "budget_exhausted" and again["duplicate"] is True


@pytest.mark.django_db(transaction=True)
def test_two_copies_of_a_request_at_the_same_time_create_everything_once():
    project = factories.project()
    token = factories.user_with_role(Role.APP, project)[1]
    items = [prediction(i, confidence=0.4) for i in range(300)]
    barrier = threading.Barrier(4)
    responses = []

    def send():
        client = factories.api_client(token)
        barrier.wait()
        responses.append(post(client, {"predictions": items}))
        connection.close()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in responses] == [201] * 4
    assert sum(r.json()["created"] for r in responses) == 300
    assert sum(r.json()["duplicates"] for r in responses) == 900
    assert Prediction.objects.count() == 300 and Task.objects.count() == 300
    task_ids = {tuple(r["task_id"] for r in resp.json()["results"]) for resp in responses}
    assert len(task_ids) == 1  # every copy reports the same tasks


# --- Reading back ------------------------------------------------------------------------------


def test_get_prediction_returns_it_with_its_task(app_client, project):
    post(app_client, prediction(1, confidence=0.3, metadata={"region": "eu"}))
    response = app_client.get(URL + "p-1/")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "p-1" and body["label"] == "1" and body["metadata"] == {"region": "eu"}
    assert body["task"]["reason"] == "low_confidence" and body["task"]["status"] == "open"
    assert body["resolved_label"] is None and body["feedback"] == []
    assert body["uncertainty"]["least_confidence"] == pytest.approx(0.7)


def test_get_unknown_prediction_is_404(app_client, project):
    response = app_client.get(URL + "nope/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "prediction_not_found"


def test_batch_ingestion_query_count_does_not_grow_with_the_batch(app_client, project):
    def queries_for(n, start):
        items = [prediction(start + i, confidence=0.4 if i % 10 == 0 else 0.99) for i in range(n)]
        with CaptureQueriesContext(connection) as ctx:
            assert post(app_client, {"predictions": items}).status_code == 201
        return len(ctx.captured_queries)

    queries_for(5, 0)  # first request creates the model version and budget rows
    assert queries_for(1000, 100) == queries_for(10, 5000)
    assert queries_for(10, 6000) <= 16
    assert ModelVersion.objects.count() == 1


def test_an_embedding_is_stored_as_float32_bytes_and_read_back(app_client, project):
    import numpy as np

    vector = [0.1, -2.5, 3.0e38, 0.0]
    post(app_client, {"predictions": [prediction(1, embedding=vector), prediction(2)]})
    stored = Prediction.objects.get(external_id="p-1").embedding
    assert bytes(stored) == np.asarray(vector, dtype="<f4").tobytes()  # 4 bytes a number, not JSON
    assert Prediction.objects.get(external_id="p-2").embedding is None
    body = app_client.get(URL + "p-1/").json()
    assert body["embedding"] == pytest.approx(np.asarray(vector, dtype=np.float32).tolist())
    assert app_client.get(URL + "p-2/").json()["embedding"] is None
