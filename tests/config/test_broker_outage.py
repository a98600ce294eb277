"""With the broker unreachable, the service keeps taking predictions, labels and requests
for work; the work that needs a worker waits in the database and is sent once the beat's
sweeps find it."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Role
from flywheel.datasets import services as datasets
from flywheel.models import DatasetStatus, DatasetVersion, Prediction, TrainingRun
from flywheel.training import runs
from tests import factories
from tests.config.test_live import call
from tests.live import LiveService, _free_port


@pytest.mark.django_db(transaction=True)
def test_the_service_takes_requests_while_the_broker_is_down_and_catches_up_after(django_capture_on_commit_callbacks):
    project = factories.project()
    app = factories.user_with_role(Role.APP, project)[1]
    ops = factories.user_with_role(Role.OPS, project)[1]
    annotator = factories.user_with_role(Role.ANNOTATOR, project)[1]
    nobody_listens = f"redis://127.0.0.1:{_free_port()}/0"
    with LiveService(CELERY_BROKER_URL=nobody_listens, CELERY_TASK_ALWAYS_EAGER="false") as service:
        api = f"{service.url}/api/v1/projects/digits"
        status, body = call(f"{api}/predictions/",
                            {"predictions": [factories.prediction(i, confidence=0.3) for i in range(30)]}, app)
        assert status == 201 and body["created"] == 30
        for i in range(20):
            status, claimed = call(f"{api}/tasks/next/", {}, annotator)
            assert status == 200
            task_id = claimed["task"]["id"]
            status, _ = call(f"{service.url}/api/v1/tasks/{task_id}/annotations/", {"label": str(i % 2)}, annotator)
            assert status == 201
        # Gold answers make the gate's evaluation set whatever split the labeled rows fall in.
        for i in range(25, 29):
            status, _ = call(f"{api}/gold/", {"prediction_id": f"p-{i}", "label": str(i % 2)}, ops)
            assert status == 201
        status, version = call(f"{api}/datasets/", {"note": "while the broker is away"}, ops)
        assert status == 202 and version["status"] == "building"
        status, run = call(f"{api}/training-runs/", {}, ops)
        assert status == 202
    assert Prediction.objects.count() == 30
    # The broker is back (this process runs tasks inline): the beat's sweeps find the work
    # whose messages never left, and it finishes.
    later = timezone.now() + timedelta(hours=1)
    with django_capture_on_commit_callbacks(execute=True):
        datasets.dataset_versions_sweep(now=later)
    assert DatasetVersion.objects.get(number=version["version"]).status == DatasetStatus.READY
    with django_capture_on_commit_callbacks(execute=True):
        runs.training_watchdog(now=later)
    run = TrainingRun.objects.get(pk=run["id"])
    assert (run.status, run.stage) == ("succeeded", "done"), run.error
