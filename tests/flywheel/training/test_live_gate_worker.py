"""Shadow mode on real Celery processes (worker and beat) with the Redis broker and
PostgreSQL: the beat has shadows score live traffic, people label the disagreements, and
the live gate promotes the better challenger and retires the worse one."""

import pytest

from flywheel.models import ModelAlias, ShadowModel, ShadowPrediction
from flywheel.training import shadow
from labeling.models import Task
from tests.flywheel.training.shadow_data import label_routed, log, trained
from tests.flywheel.training.test_live_gate import project_with_live_gate
from tests.worker import CeleryProcess, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_the_beat_scores_and_the_live_gate_promotes_the_better_and_retires_the_worse():
    better_project, worse_project = project_with_live_gate(), project_with_live_gate(slug="other")
    better = trained(better_project, "cand", start=0, count=700)
    worse = trained(worse_project, "weak", start=0, count=25)
    for project, candidate, right_share in ((better_project, better, 0.7), (worse_project, worse, 1.0)):
        log(project, start=0, count=5, right_share=right_share)
        shadow.shadow_start(project=project, model_version=candidate)
    truth = {"digits": log(better_project, start=800, count=400, right_share=0.7),
             "other": log(worse_project, start=800, count=400, right_share=1.0)}

    with CeleryProcess(FLYWHEEL_SHADOW_CHECK_SECONDS="1") as worker, \
            CeleryProcess("beat", queue=worker.queue, FLYWHEEL_SHADOW_CHECK_SECONDS="1"):
        wait_until(lambda: ShadowPrediction.objects.count() == 800, timeout=90, message="the shadows scored")
        for project in (better_project, worse_project):
            disagreements = ShadowPrediction.objects.filter(project=project, agrees=False).count()
            assert Task.objects.filter(project=project, reason="disagreement").count() == disagreements
            label_routed(project, truth[project.slug])
        wait_until(lambda: set(ShadowModel.objects.values_list("state", flat=True)) == {"promoted", "retired"},
                   timeout=60, message="the live gate decided")
        worker.wait_for_log("flywheel.shadow.live_gate", timeout=5)

    assert ShadowModel.objects.get(project=better_project).state == "promoted"
    assert ModelAlias.objects.get(project=better_project, alias="champion").model_version == better
    assert ShadowModel.objects.get(project=worse_project).state == "retired"
    assert ModelAlias.objects.get(project=worse_project, alias="champion").model_version.name == "v1"
    # Scored exactly once, whatever the number of beats.
    assert ShadowPrediction.objects.count() == 800
