"""Shadow predictions through the API (docs/api.md: Shadow predictions): a challenger's
answers stored once, its disagreements with the champion routed once per prediction within
the daily budget, and bad input refused with nothing stored."""

import pytest
from django.utils import timezone

from flywheel.models import Disagreement, ModelVersion, Prediction, Project, RoutingBudget, ShadowPrediction
from labeling.models import Label, Task
from tests.factories import prediction

URL = "/api/v1/projects/digits/shadow-predictions/"


def log_predictions(client, n, **overrides):
    body = {"predictions": [prediction(i, confidence=0.95, **overrides) for i in range(n)]}
    response = client.post("/api/v1/projects/digits/predictions/", body, format="json")
    assert response.status_code == 201, response.json()


def shadow(i, label=None, version="v2-rc1", **overrides):
    """The shadow answer for p-<i>: the champion's label (i % 10) unless told otherwise."""
    return {"prediction_id": f"p-{i}", "model_version": version, "label": str(i % 10) if label is None else label,
            "confidence": 0.8, **overrides}


def post(client, body):
    return client.post(URL, body, format="json")


def routing(project, **policy):
    Project.objects.filter(pk=project.pk).update(routing={**project.routing, **policy})


# --- The happy path -------------------------------------------------------------------------


def test_an_agreeing_answer_is_stored_and_not_routed(app_client, project):
    log_predictions(app_client, 1)
    response = post(app_client, shadow(0, probabilities={"0": 0.8, "1": 0.2}))
    assert response.status_code == 201, response.json()
    assert response.json() == {"created": 1, "duplicates": 0, "results": [
        {"prediction_id": "p-0", "agrees": True, "routed": False, "reason": "agrees", "task_id": None,
         "duplicate": False}]}
    stored = ShadowPrediction.objects.get()
    assert (stored.label, stored.confidence, stored.agrees) == ("0", 0.8, True)
    assert stored.probabilities == {"0": 0.8, "1": 0.2}
    assert stored.champion.name == "v1" and stored.model_version.name == "v2-rc1"
    assert Task.objects.count() == 0 and Disagreement.objects.count() == 0


def test_a_disagreement_is_routed_with_its_reason(app_client, project):
    log_predictions(app_client, 1)
    (result,) = post(app_client, shadow(0, label="6")).json()["results"]
    assert result["agrees"] is False and result["routed"] is True and result["reason"] == "disagreement"
    task = Task.objects.get(pk=result["task_id"])
    assert task.reason == "disagreement" and task.prediction.external_id == "p-0" and task.status == "open"
    # With the audit sample, ahead of every uncertainty-routed task.
    assert 1.0 <= task.priority <= 2.0
    assert Disagreement.objects.get().reason == "disagreement"
    assert RoutingBudget.objects.get().used == 1


def test_a_batch_answers_in_request_order_and_a_retry_changes_nothing(app_client, project):
    log_predictions(app_client, 20)
    body = {"shadow_predictions": [shadow(i, label="9" if i % 4 == 0 else None) for i in range(20)]}
    first = post(app_client, body).json()
    assert first["created"] == 20 and first["duplicates"] == 0
    assert [r["prediction_id"] for r in first["results"]] == [f"p-{i}" for i in range(20)]
    # p-9 answered "9" as the champion did: an agreement.
    assert [r["agrees"] for r in first["results"]] == [not (i % 4 == 0) or i % 10 == 9 for i in range(20)]
    assert Task.objects.filter(reason="disagreement").count() == 5

    again = post(app_client, body).json()
    assert again["created"] == 0 and again["duplicates"] == 20
    assert [{**r, "duplicate": False} for r in again["results"]] == first["results"]
    assert ShadowPrediction.objects.count() == 20 and Task.objects.count() == 5
    assert RoutingBudget.objects.get().used == 5


def test_a_repeat_inside_one_request_is_a_duplicate_of_its_first_copy(app_client, project):
    log_predictions(app_client, 1)
    body = post(app_client, {"shadow_predictions": [shadow(0, label="3"), shadow(0, label="4")]}).json()
    assert ShadowPrediction.objects.get().label == "3"
    assert body["created"] == 1 and body["duplicates"] == 1
    assert [r["duplicate"] for r in body["results"]] == [False, True]
    assert body["results"][0]["task_id"] == body["results"][1]["task_id"]
    assert Task.objects.count() == 1


def test_two_shadows_disagreeing_on_one_prediction_route_it_once(app_client, project):
    log_predictions(app_client, 1)
    first = post(app_client, shadow(0, label="4", version="rc-a")).json()["results"][0]
    second = post(app_client, shadow(0, label="5", version="rc-b")).json()["results"][0]
    assert first["routed"] and second["routed"] and first["task_id"] == second["task_id"]
    assert Task.objects.count() == 1 and ShadowPrediction.objects.count() == 2
    assert RoutingBudget.objects.get().used == 1


def test_a_prediction_already_in_the_queue_keeps_its_task(app_client, project):
    response = app_client.post("/api/v1/projects/digits/predictions/", prediction(0, confidence=0.4), format="json")
    queued = response.json()["results"][0]
    assert queued["reason"] == "low_confidence"
    (result,) = post(app_client, shadow(0, label="2")).json()["results"]
    assert result == {"prediction_id": "p-0", "agrees": False, "routed": True, "reason": "low_confidence",
                      "task_id": queued["task_id"], "duplicate": False}
    assert Task.objects.count() == 1


def test_a_labeled_prediction_needs_no_task(app_client, project):
    log_predictions(app_client, 1)
    pk = Prediction.objects.get().pk
    Label.objects.create(project=project, prediction_id=pk, label="0", source="annotation")
    (result,) = post(app_client, shadow(0, label="2")).json()["results"]
    assert (result["routed"], result["reason"], result["task_id"]) == (False, "labeled", None)
    assert Task.objects.count() == 0


def test_the_disagreement_rate_draws_a_fixed_share(app_client, project):
    routing(project, disagreement_rate=0.3, daily_budget=10_000)
    log_predictions(app_client, 400)
    body = post(app_client, {"shadow_predictions": [shadow(i, label=str((i + 1) % 10)) for i in range(400)]}).json()
    routed = [r for r in body["results"] if r["routed"]]
    assert 80 <= len(routed) <= 160
    assert {r["reason"] for r in body["results"] if not r["routed"]} == {"not_drawn"}
    assert Disagreement.objects.filter(drawn=True).count() == len(routed)
    assert set(Disagreement.objects.values_list("rate", flat=True)) == {0.3}
    # Another shadow disagreeing on the same predictions gets the same draw: nothing new.
    again = post(app_client, {"shadow_predictions": [shadow(i, label=str((i + 2) % 10), version="rc-b")
                                                     for i in range(400)]}).json()
    assert [r["routed"] for r in again["results"]] == [r["routed"] for r in body["results"]]
    assert Task.objects.count() == len(routed)


def test_a_zero_rate_routes_no_disagreement(app_client, project):
    routing(project, disagreement_rate=0.0)
    log_predictions(app_client, 3)
    body = post(app_client, {"shadow_predictions": [shadow(i, label="8") for i in range(3)]}).json()
    assert {r["reason"] for r in body["results"]} == {"not_drawn"} and Task.objects.count() == 0


def test_disagreements_share_the_daily_budget_with_uncertainty_routing(app_client, project):
    routing(project, daily_budget=4)
    RoutingBudget.objects.create(project=project, day=timezone.now().date(), used=1)
    log_predictions(app_client, 10)
    body = post(app_client, {"shadow_predictions": [shadow(i, label=str((i + 1) % 10)) for i in range(10)]}).json()
    assert sum(r["routed"] for r in body["results"]) == 3
    assert sum(r["reason"] == "budget_exhausted" for r in body["results"]) == 7
    assert RoutingBudget.objects.get().used == 4
    # Once decided, a disagreement keeps its outcome: a later answer does not route it anew.
    RoutingBudget.objects.update(used=0)
    again = post(app_client, {"shadow_predictions": [shadow(i, label=str((i + 2) % 10), version="rc-b")
                                                     for i in range(10)]}).json()
    assert sum(r["routed"] for r in again["results"]) == 3 and Task.objects.count() == 3


def test_the_disagreement_rate_is_a_checked_routing_policy(ops_client, project):
    url = "/api/v1/projects/digits/"
    response = ops_client.patch(url, {"routing": {"disagreement_rate": 1.5}}, format="json")
    assert response.status_code == 400 and "routing.disagreement_rate" in response.json()["error"]["fields"]
    response = ops_client.patch(url, {"routing": {"disagreement_rat": 0.5}}, format="json")
    assert response.status_code == 400
    assert "disagreement_rate" in response.json()["error"]["fields"]["routing.disagreement_rat"][0]
    response = ops_client.patch(url, {"routing": {"disagreement_rate": 0.25}}, format="json")
    assert response.status_code == 200 and response.json()["routing"]["disagreement_rate"] == 0.25


def test_a_batch_costs_a_fixed_number_of_queries(app_client, project, django_assert_max_num_queries):
    routing(project, daily_budget=100_000)
    log_predictions(app_client, 600)
    small = {"shadow_predictions": [shadow(i, label=str((i + 1) % 10) if i % 2 else None) for i in range(20)]}
    large = {"shadow_predictions": [shadow(i, label=str((i + 1) % 10) if i % 2 else None) for i in range(20, 600)]}
    with django_assert_max_num_queries(30) as small_queries:
        assert post(app_client, small).status_code == 201
    small_count = len(small_queries.captured_queries)
    assert small_count > 5
    with django_assert_max_num_queries(small_count):
        assert post(app_client, large).status_code == 201
    assert ShadowPrediction.objects.count() == 600 and Task.objects.count() == 300


# --- Bad input ------------------------------------------------------------------------------


def assert_nothing_stored():
    assert ShadowPrediction.objects.count() == 0 and Disagreement.objects.count() == 0
    assert Task.objects.count() == 0
    assert not ModelVersion.objects.filter(name="v2-rc1").exists()


def test_an_unknown_prediction_alone_is_a_404(app_client, project):
    response = post(app_client, shadow(0))
    assert response.status_code == 404 and response.json()["error"]["code"] == "prediction_not_found"
    assert_nothing_stored()


def test_an_unknown_prediction_in_a_batch_names_its_field(app_client, project):
    log_predictions(app_client, 2)
    response = post(app_client, {"shadow_predictions": [shadow(0, label="5"), shadow(7), shadow(1)]})
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"shadow_predictions[1].prediction_id":
                                                  ["No such prediction in this project."]}
    assert_nothing_stored()


def test_the_champions_own_version_is_refused(app_client, project):
    log_predictions(app_client, 2)
    response = post(app_client, {"shadow_predictions": [shadow(0, label="5"), shadow(1, version="v1")]})
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert list(fields) == ["shadow_predictions[1].model_version"] and "champion" in fields[
        "shadow_predictions[1].model_version"][0]
    assert_nothing_stored()


def test_another_projects_prediction_is_unknown(app_client, project, other_project):
    from accounts.models import Role
    from tests import factories
    other = factories.api_client(factories.user_with_role(Role.APP, other_project)[1])
    assert other.post("/api/v1/projects/other/predictions/", prediction(0), format="json").status_code == 201
    assert post(app_client, shadow(0)).status_code == 404


@pytest.mark.parametrize("change, field", [
    ({"label": "cat"}, "label"),
    ({"label": 7}, "label"),
    ({"confidence": 1.5}, "confidence"),
    ({"confidence": "high"}, "confidence"),
    ({"confidence": True}, "confidence"),
    ({"confidence": None}, "confidence"),
    ({"probabilities": {"0": 0.5, "1": 0.4}}, "probabilities"),
    ({"probabilities": {"0": 0.9, "cat": 0.1}}, "probabilities.cat"),
    ({"probabilities": {"0": 1.2, "1": -0.2}}, "probabilities.0"),
    ({"probabilities": {"0": 0.3, "1": 0.7}, "confidence": 0.8}, "confidence"),
    ({"probabilities": {"1": 1.0}}, "probabilities"),
    ({"model_version": "bad version!"}, "model_version"),
    ({"model_version": None}, "model_version"),
    ({"prediction_id": ""}, "prediction_id"),
    ({"prediction_id": None}, "prediction_id"),
    ({"extra": 1}, "extra"),
])
def test_bad_fields_are_400s_naming_the_field(app_client, project, change, field):
    log_predictions(app_client, 2)
    item = {**shadow(0), **change}
    response = post(app_client, item)
    assert response.status_code == 400, response.json()
    assert field in response.json()["error"]["fields"]
    response = post(app_client, {"shadow_predictions": [shadow(1, label="4"), item]})
    assert response.status_code == 400
    assert f"shadow_predictions[1].{field}" in response.json()["error"]["fields"]
    assert_nothing_stored()


@pytest.mark.parametrize("body", [[], "x", {"shadow_predictions": []}, {"shadow_predictions": {}},
                                  {"shadow_predictions": [1]}, {"shadow_predictions": [], "x": 1}])
def test_malformed_bodies_are_400s(app_client, project, body):
    response = post(app_client, body)
    assert response.status_code == 400 and response.json()["error"]["fields"]
    assert_nothing_stored()


def test_a_batch_over_the_limit_is_a_413(app_client, project, settings):
    settings.FLYWHEEL_MAX_BATCH = 5
    response = post(app_client, {"shadow_predictions": [shadow(i) for i in range(6)]})
    assert response.status_code == 413 and "shadow_predictions" in response.json()["error"]["fields"]


@pytest.mark.django_db(transaction=True)
def test_copies_of_one_request_arriving_at_once_store_and_route_once(project, app_token):
    import threading

    from django.db import connection

    from tests import factories

    client = factories.api_client(app_token)
    log_predictions(client, 50)
    body = {"shadow_predictions": [shadow(i, label=str((i + 1) % 10)) for i in range(50)]}
    answers, barrier = [], threading.Barrier(3)

    def send():
        try:
            barrier.wait()
            answers.append(post(factories.api_client(app_token), body).json())
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a["created"] for a in answers) == [0, 0, 50]
    assert sorted(a["duplicates"] for a in answers) == [0, 50, 50]
    assert ShadowPrediction.objects.count() == 50 and Disagreement.objects.count() == 50
    assert Task.objects.count() == 50 and RoutingBudget.objects.get().used == 50
    task_ids = [[r["task_id"] for r in a["results"]] for a in answers]
    assert task_ids[0] == task_ids[1] == task_ids[2]


def test_a_label_from_feedback_alone_does_not_spare_the_task(app_client, project):
    log_predictions(app_client, 1)
    Label.objects.create(project=project, prediction_id=Prediction.objects.get().pk, label="0", source="feedback")
    (result,) = post(app_client, shadow(0, label="2")).json()["results"]
    assert (result["routed"], result["reason"]) == (True, "disagreement")
