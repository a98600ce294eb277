"""The lease sweep on a real Celery worker process."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Role
from labeling import services
from labeling.models import Lease, Task
from labeling.tasks import leases_sweep
from tests import factories
from tests.worker import CeleryProcess, broker_mode, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_a_worker_returns_expired_leases_to_the_queue():
    project = factories.project(labeling={"gold_rate": 0.0})
    app = factories.api_client(factories.user_with_role(Role.APP, project)[1])
    app.post("/api/v1/projects/digits/predictions/", factories.prediction(1, confidence=0.2), format="json")
    user = factories.user_with_role(Role.ANNOTATOR, project)[0]
    task = services.task_claim(project=project, user=user)
    Lease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    with CeleryProcess() as worker, broker_mode():
        leases_sweep.delay()
        wait_until(lambda: Task.objects.get(pk=task.pk).status == "open", message="the task reopened")
        assert not Lease.objects.exists()
        leases_sweep.delay()  # a second run finds nothing
        worker.wait_for_log("succeeded", timeout=30)
    assert Task.objects.get(pk=task.pk).status == "open"
