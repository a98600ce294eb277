"""The live gate: a candidate judged on live traffic in shadow is promoted when better,
taken out of shadow when significantly worse, and every decision is stored and logged."""

import pytest

from accounts.models import AuditEvent
from flywheel.models import ModelAlias, ModelPromotion, Project, ShadowModel, TrainingRun
from flywheel.tasks import live_gates_task, shadows_score_task
from flywheel.training import runs, shadow
from tests.flywheel.training.shadow_data import label_routed, log, trained
from tests.flywheel.training.training_data import digits_project, log_and_label

LIVE_GATE = {"enabled": True, "min_labels": 30, "min_improvement": 0.0}


def project_with_live_gate(slug="digits", **live_gate):
    project = digits_project(slug=slug, retraining={"live_gate": {**LIVE_GATE, **live_gate}})
    Project.objects.filter(pk=project.pk).update(routing={**project.routing, "daily_budget": 100_000})
    project.refresh_from_db()
    return project


def in_shadow_on_traffic(project, candidate, *, right_share):
    """The candidate in shadow, 500 predictions of v1 scored with it, its disagreements labeled."""
    log(project, start=0, count=5, right_share=right_share)
    shadow.shadow_start(project=project, model_version=candidate)
    truth = log(project, start=800, count=500, right_share=right_share)
    assert shadows_score_task.delay().get() == 500
    assert label_routed(project, truth) >= LIVE_GATE["min_labels"]


def test_a_better_challenger_is_promoted_and_a_second_look_does_nothing(db):
    project = project_with_live_gate()
    candidate = trained(project, "cand", start=0, count=700)
    in_shadow_on_traffic(project, candidate, right_share=0.7)
    assert live_gates_task.delay().get() == {"better": 1}
    row = ShadowModel.objects.get()
    assert row.state == "promoted" and row.verdict == "better" and row.reasons
    assert ModelAlias.objects.get(project=project, alias="champion").model_version == candidate
    assert not ModelAlias.objects.filter(project=project, alias="challenger").exists()
    promotion = ModelPromotion.objects.get(model_version=candidate)
    assert promotion.reason.startswith("the live gate") and promotion.actor_name == "system"
    event = AuditEvent.objects.get(action="model.live_gate")
    assert event.details["verdict"] == "better" and event.details["difference"]["low"] > 0
    assert live_gates_task.delay().get() == {}
    assert ModelPromotion.objects.count() == 1


def test_a_worse_challenger_is_retired_and_the_champion_stays(db):
    project = project_with_live_gate()
    candidate = trained(project, "weak", start=0, count=25)
    in_shadow_on_traffic(project, candidate, right_share=1.0)
    assert live_gates_task.delay().get() == {"worse": 1}
    row = ShadowModel.objects.get()
    assert row.state == "retired" and row.verdict == "worse" and row.reason.startswith("the live gate")
    assert ModelAlias.objects.get(project=project, alias="champion").model_version.name == "v1"
    assert not ModelAlias.objects.filter(project=project, alias="challenger").exists()
    assert AuditEvent.objects.get(action="model.live_gate").details["verdict"] == "worse"
    assert AuditEvent.objects.filter(action="model.shadow_stop", target="weak").exists()
    # Retired, it is scored no more.
    log(project, start=1400, count=20)
    assert shadows_score_task.delay().get() == 0


def test_a_disabled_live_gate_judges_but_decides_nothing(db):
    project = project_with_live_gate(enabled=False)
    candidate = trained(project, "cand", start=0, count=700)
    in_shadow_on_traffic(project, candidate, right_share=0.7)
    assert live_gates_task.delay().get() == {"better": 1}
    row = ShadowModel.objects.get()
    assert row.state == "active" and row.verdict == "better" and row.evaluated_at is not None
    assert ModelAlias.objects.get(project=project, alias="champion").model_version.name == "v1"
    assert not AuditEvent.objects.filter(action="model.live_gate").exists()


def test_too_few_labels_leave_it_in_shadow(db):
    project = project_with_live_gate(min_labels=10_000)
    candidate = trained(project, "cand", start=0, count=700)
    in_shadow_on_traffic(project, candidate, right_share=0.7)
    assert live_gates_task.delay().get() == {"undecided": 1}
    assert ShadowModel.objects.get().state == "active"
    assert "needed" in ShadowModel.objects.get().reasons[0]


@pytest.fixture
def inline(django_capture_on_commit_callbacks):
    def run(fn, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)
    return run


def test_with_the_live_gate_a_candidate_that_passes_offline_goes_into_shadow(inline, db):
    project = project_with_live_gate()
    log_and_label(project, start=0, count=900)
    log(project, start=0, count=1)  # v1, logged by the app, is the champion
    run = inline(runs.training_run_request, project=project, trigger="manual")
    run.refresh_from_db()
    assert run.status == "succeeded" and run.gate["passed"] and not run.promoted, run.error
    row = ShadowModel.objects.get()
    assert row.model_version == run.model_version and row.training_run == run and row.state == "active"
    assert row.started_by == "gate"
    assert ModelAlias.objects.get(project=project, alias="challenger").model_version == run.model_version
    assert ModelAlias.objects.get(project=project, alias="champion").model_version.name == "v1"

    # Live traffic decides: the candidate, trained on 900 digits, beats v1's 70%.
    truth = log(project, start=900, count=500)
    shadows_score_task.delay().get()
    label_routed(project, truth)
    assert live_gates_task.delay().get() == {"better": 1}
    run.refresh_from_db()
    assert run.promoted and run.gate["live"]["verdict"] == "better" and run.gate["passed"]
    assert ModelPromotion.objects.get(model_version=run.model_version).training_run == run
    assert TrainingRun.objects.count() == 1
