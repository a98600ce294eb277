"""Flywheel's own models in shadow: POST/DELETE .../models/{name}/shadow/, and the task
that scores every new prediction with a shadow exactly once, batched, catching up after an
outage (docs/api.md: Training and the model registry)."""

from datetime import timedelta

import numpy as np
import pytest
from django.db.models import Count, Max
from django.utils import timezone

from accounts.models import AuditEvent, Role
from flywheel.models import ModelAlias, Prediction, ShadowModel, ShadowPrediction
from flywheel.tasks import shadows_score_task
from flywheel.training import shadow
from flywheel.training.artifacts import model_load
from flywheel.training.rows import prediction_rows
from labeling.models import Task
from tests import factories
from tests.flywheel.training.shadow_data import log, trained
from tests.flywheel.training.training_data import digits_project

URL = "/api/v1/projects/digits/models/{}/shadow/"


@pytest.fixture
def digits(db, settings):
    settings.FLYWHEEL_SHADOW_BATCH = 60
    project = digits_project()
    project.routing = {**project.routing, "daily_budget": 100_000}
    project.save()
    return project


@pytest.fixture
def ops_api(digits):
    return factories.api_client(factories.user_with_role(Role.OPS, digits)[1])


def test_a_shadow_scores_each_new_prediction_once_and_a_second_run_is_a_no_op(digits, ops_api):
    log(digits, start=0, count=100)  # before the shadow: never scored
    candidate = trained(digits, "cand", start=0, count=400)
    response = ops_api.post(URL.format("cand"), {"reason": "try it"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["state"] == "active" and response.json()["started_by"].startswith("ops")
    assert ModelAlias.objects.get(project=digits, alias="challenger").model_version == candidate
    assert AuditEvent.objects.filter(action="model.shadow_start", target="cand").exists()
    assert ops_api.post(URL.format("cand"), {}, format="json").status_code == 201  # again: unchanged

    log(digits, start=500, count=250)
    assert shadows_score_task.delay().get() == 250  # batches of 60
    scored = ShadowPrediction.objects.filter(model_version=candidate)
    assert scored.count() == 250 and scored.values("prediction").distinct().count() == 250
    assert scored.aggregate(first=Max("prediction_id"))["first"] == Prediction.objects.aggregate(m=Max("id"))["m"]
    assert not scored.filter(prediction__external_id__in=[p.external_id for p in Prediction.objects.order_by(
        "id")[:100]]).exists()
    # Its answers are the model's own, and its disagreements were routed, once each.
    rows = prediction_rows(digits, list(scored.values_list("prediction_id", flat=True)))
    labels, _ = model_load(candidate).predict(rows.numeric, rows.categorical)
    stored = dict(scored.values_list("prediction_id", "label"))
    assert [stored[pid] for pid in rows.prediction_ids.tolist()] == list(labels)
    disagreements = scored.filter(agrees=False).count()
    assert disagreements > 30
    assert Task.objects.filter(reason="disagreement").count() == disagreements

    assert shadows_score_task.delay().get() == 0
    assert scored.count() == 250 and Task.objects.filter(reason="disagreement").count() == disagreements


def test_after_an_outage_the_shadow_catches_up_on_everything_missed(digits):
    candidate = trained(digits, "cand", start=0, count=300)
    log(digits, start=0, count=10)
    shadow.shadow_start(project=digits, model_version=candidate)
    log(digits, start=10, count=50)
    assert shadow.shadows_score() == 50
    # No worker for a while: traffic piles up.
    for start in range(100, 400, 100):
        log(digits, start=start, count=100)
    later = timezone.now() + timedelta(minutes=10)
    assert shadow.shadow_score(shadow_id=ShadowModel.objects.get().pk, now=later) == 300
    per_prediction = ShadowPrediction.objects.values("prediction").annotate(n=Count("id"))
    assert per_prediction.count() == 350 and {row["n"] for row in per_prediction} == {1}
    # Everything received before the settle time is behind the floor: no scan goes back there.
    assert ShadowModel.objects.get().scored_floor == Prediction.objects.aggregate(m=Max("id"))["m"]
    assert shadow.shadow_score(shadow_id=ShadowModel.objects.get().pk, now=later) == 0


@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_score_each_prediction_once(digits):
    import threading

    from django.db import connection

    candidate = trained(digits, "cand", start=0, count=300)
    log(digits, start=0, count=1)
    shadow.shadow_start(project=digits, model_version=candidate)
    log(digits, start=1, count=200)
    results = []

    def score():
        try:
            results.append(shadow.shadows_score())
        finally:
            connection.close()

    threads = [threading.Thread(target=score) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ShadowPrediction.objects.count() == 200 == sum(results)


def test_taken_out_of_shadow_it_scores_no_more(digits, ops_api):
    candidate = trained(digits, "cand", start=0, count=300)
    log(digits, start=0, count=5)
    ops_api.post(URL.format("cand"), {}, format="json")
    response = ops_api.delete(URL.format("cand"), {"reason": "enough"}, format="json")
    assert response.status_code == 200 and response.json()["state"] == "stopped"
    assert response.json()["reason"] == "enough"
    assert not ModelAlias.objects.filter(project=digits, alias="challenger").exists()
    log(digits, start=5, count=30)
    assert shadows_score_task.delay().get() == 0
    assert ops_api.delete(URL.format("cand"), {}, format="json").status_code == 409
    # Back in shadow, it starts afresh from the predictions that come next.
    assert ops_api.post(URL.format("cand"), {}, format="json").json()["state"] == "active"
    log(digits, start=40, count=20)
    assert shadows_score_task.delay().get() == 20
    assert ShadowPrediction.objects.filter(model_version=candidate).count() == 20


def test_only_a_model_trained_here_can_be_scored_here(digits, ops_api):
    log(digits, start=0, count=5)
    response = ops_api.post(URL.format("v1"), {}, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "no_artifact"
    assert ops_api.post(URL.format("nope"), {}, format="json").status_code == 404
    assert ops_api.post(URL.format("v1"), {"reason": 5 * "x" * 300}, format="json").status_code == 400
    assert not ShadowModel.objects.exists()


def test_the_champion_is_no_shadow_of_itself(digits, ops_api):
    candidate = trained(digits, "cand", start=0, count=300)
    log(digits, start=0, count=5)
    from flywheel.training.registry import model_promote
    model_promote(project=digits, model_version=candidate)
    response = ops_api.post(URL.format("cand"), {}, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "is_champion"


def test_the_comparison_shows_the_shadow_state(digits, ops_api):
    trained(digits, "cand", start=0, count=300)
    log(digits, start=0, count=5)
    ops_api.post(URL.format("cand"), {}, format="json")
    log(digits, start=5, count=40)
    shadows_score_task.delay().get()
    body = ops_api.get(URL.format("cand")).json()
    assert body["paired"] == 40 and body["champion"] == "v1" and body["shadow"]["state"] == "active"
    assert np.isclose(body["agreement"], ShadowPrediction.objects.filter(agrees=True).count() / 40)


def test_promoted_by_hand_it_leaves_shadow(digits, ops_api):
    trained(digits, "cand", start=0, count=300)
    log(digits, start=0, count=5)
    ops_api.post(URL.format("cand"), {}, format="json")
    assert ops_api.post(URL.format("cand").replace("shadow", "promote"), {}, format="json").status_code == 200
    row = ShadowModel.objects.get()
    assert row.state == "promoted" and row.ended_at is not None
    assert not ModelAlias.objects.filter(project=digits, alias="challenger").exists()
    log(digits, start=5, count=20)
    assert shadows_score_task.delay().get() == 0


def test_a_batch_costs_a_fixed_number_of_queries(digits, settings, django_assert_max_num_queries):
    settings.FLYWHEEL_SHADOW_BATCH = 1000
    candidate = trained(digits, "cand", start=0, count=300)
    log(digits, start=0, count=1)
    row = shadow.shadow_start(project=digits, model_version=candidate)
    log(digits, start=1, count=30)
    with django_assert_max_num_queries(40) as small:
        assert shadow.shadow_score(shadow_id=row.pk) == 30
    small_count = len(small.captured_queries)
    log(digits, start=100, count=400)
    with django_assert_max_num_queries(small_count):
        assert shadow.shadow_score(shadow_id=row.pk) == 400


def test_a_shadow_that_cannot_score_does_not_hold_up_the_others(digits):
    from common.storage import get_storage
    from flywheel.training import artifacts

    other = digits_project(slug="other")
    broken = trained(digits, "broken", start=0, count=310)
    working = trained(other, "cand", start=0, count=300)
    log(digits, start=0, count=1)
    log(other, start=0, count=1)
    shadow.shadow_start(project=digits, model_version=broken)
    shadow.shadow_start(project=other, model_version=working)
    get_storage().delete(f"models/digits/{broken.artifact_sha256}.pkl")
    artifacts._loaded.pop(broken.artifact_sha256, None)
    log(digits, start=1, count=20)
    log(other, start=1, count=20)
    assert shadows_score_task.delay().get() == 20
    assert ShadowPrediction.objects.filter(model_version=working).count() == 20
    assert not ShadowPrediction.objects.filter(model_version=broken).exists()
    assert ShadowModel.objects.get(model_version=broken).state == "active"  # tried again on the next beat
