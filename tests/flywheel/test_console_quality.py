"""The console's quality page (/ops/<slug>/quality/): per-annotator figures, the
reliability diagram beside the ECE from audit labels, and the queue by reason with its age."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Role
from labeling import services
from labeling.models import Task
from tests import factories


def make_audited():
    """Eight predictions at confidence 0.9, all audited; six labeled by one annotator, four
    of them as the model said: accuracy 4/6 where the model claimed 0.9."""
    project = factories.project(routing_policy={"threshold": 0.05, "audit_rate": 1.0, "daily_budget": 1000},
                                labeling={"gold_rate": 0.0})
    app = factories.api_client(factories.user_with_role(Role.APP, project)[1])
    items = [factories.prediction(i, confidence=0.9, label="1") for i in range(8)]
    assert app.post("/api/v1/projects/digits/predictions/", {"predictions": items}, format="json").status_code == 201
    annotator, _ = factories.user_with_role(Role.ANNOTATOR, project, username="ann")
    for answer in ["1", "1", "1", "1", "2", "2"]:
        task = services.task_claim(project=project, user=annotator)
        services.annotation_submit(task_id=task.pk, user=annotator, label=answer)
    Task.objects.filter(status="open").update(created_at=timezone.now() - timedelta(hours=5))
    return project


@pytest.fixture
def audited(db):
    return make_audited()


def test_the_quality_page_shows_people_calibration_and_the_queue(audited, django_assert_max_num_queries):
    user, _ = factories.user_with_role(Role.OPS, audited)
    client = Client()
    client.force_login(user)
    with django_assert_max_num_queries(25):
        response = client.get("/ops/digits/quality/")
    html = response.content.decode()
    assert response.status_code == 200
    row = html.split('data-testid="annotators"')[1].split("</tr>")[1]
    assert "<b>ann</b>" in row and "<td>6</td>" in row
    assert 'data-testid="ece">ECE 0.233' in html  # |4/6 - 0.9|
    bars = re.findall(r'<rect class="bar"[^>]*height="([\d.]+)"', html)
    assert bars == ["133.3"]  # one bin (0.9-1.0) whose accuracy is 4/6 of the 200-unit axis
    queue = html.split('data-testid="queue"')[1]
    assert '<tr data-reason="audit"><td>Random audit sample</td><td>2</td>' in queue and "5 h" in queue


def test_annotators_are_refused(audited):
    user, _ = factories.user_with_role(Role.ANNOTATOR, audited)
    client = Client()
    client.force_login(user)
    assert client.get("/ops/digits/quality/").status_code == 403
