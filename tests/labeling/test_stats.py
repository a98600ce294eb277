"""Annotator statistics and agreement in the project's stats."""

import pytest

from accounts.models import Role
from flywheel.models import Project
from labeling import services
from labeling.models import Task
from tests import factories


def test_stats_report_queue_labels_annotators_and_agreement(app_client, ops_client, project):
    Project.objects.filter(pk=project.pk).update(routing={**project.routing, "annotations_per_task": 2},
                                                 labeling={"gold_rate": 0.0, "min_agreement": 0.5})
    project.refresh_from_db()
    app_client.post("/api/v1/projects/digits/predictions/",
                    {"predictions": [factories.prediction(i, confidence=0.2, label="1") for i in range(6)]},
                    format="json")
    ann, _ = factories.user_with_role(Role.ANNOTATOR, project, username="ann")
    bob, _ = factories.user_with_role(Role.ANNOTATOR, project, username="bob")
    # ann and bob agree on 4 of 6 tasks; ann accepts the model's "1" every time.
    ann_labels = ["1", "1", "1", "1", "1", "1"]
    bob_labels = ["1", "1", "1", "1", "2", "3"]
    lead = {ann: [2.0, 4.0, 6.0, 8.0, 10.0, 12.0], bob: [1.0] * 6}
    for user, labels in ((ann, ann_labels), (bob, bob_labels)):
        for i, label in enumerate(labels):
            task = services.task_claim(project=project, user=user)
            services.annotation_submit(task_id=task.pk, user=user, label=label, lead_time_s=lead[user][i])
    stats = ops_client.get("/api/v1/projects/digits/stats/").json()
    assert stats["queue"]["total"] == 0 and stats["queue"]["review"] == 2
    assert stats["labels_per_day"][0]["total"] == 4 and stats["labels_per_day"][0]["by_source"] == {"consensus": 4}
    by_name = {a["annotator"]: a for a in stats["annotators"]}
    assert by_name["ann"]["tasks_done"] == 6 and by_name["ann"]["median_lead_time_s"] == 7.0
    assert by_name["ann"]["suggestion_accepted_rate"] == 1.0
    assert by_name["bob"]["suggestion_accepted_rate"] == pytest.approx(4 / 6)
    # ann always said "1": whatever bob said, their agreement is exactly what chance gives.
    assert by_name["ann"]["peer_kappa"] == pytest.approx(0.0) and by_name["bob"]["peer_kappa"] == pytest.approx(0.0)
    agreement = stats["agreement"]
    assert agreement["units"] == 6
    # Units (1,1)x4, (1,2), (1,3): n=12, n_1=10, D_o=4/12, D_e=2*(10*1+10*1+1*1)/(12*11) -> 1 - (1/3)/(42/132)
    assert agreement["alpha"] == pytest.approx(1 - (4 / 12) / (42 / 132))
    assert agreement["pairs"] == [{"annotators": ["ann", "bob"], "kappa": 0.0, "items": 6}]
    assert set(Task.objects.values_list("status", flat=True)) == {"done", "review"}
