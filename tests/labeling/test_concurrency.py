"""Claims under contention: 32 annotators at once on PostgreSQL, and the portable claim on
SQLite."""

import os
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from django.db import connection

from accounts.models import Role
from flywheel.models import Project
from labeling import services
from labeling.models import Annotation, Task
from tests import factories
from tests.live import ROOT  # noqa: E402


def _route(project, n):
    token = factories.user_with_role(Role.APP, project)[1]
    client = factories.api_client(token)
    items = [factories.prediction(i, confidence=0.2 + (i % 50) * 0.001) for i in range(n)]
    assert client.post(f"/api/v1/projects/{project.slug}/predictions/", {"predictions": items},
                       format="json").status_code == 201


def _annotate_all(project, annotators: int) -> list[tuple[int, int]]:
    """Every annotator claims and labels until the queue is empty; returns (task, user) claims."""
    users = [factories.user_with_role(Role.ANNOTATOR, project)[0] for _ in range(annotators)]
    barrier = threading.Barrier(annotators)
    claims: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(user):
        try:
            barrier.wait()
            while True:
                task = services.task_claim(project=project, user=user)
                if task is None:
                    # Nothing open for me right now; others may still free a slot I can take.
                    if not Task.objects.filter(project=project, status__in=["open", "leased"]).exists():
                        return
                    time.sleep(0.01)
                    continue
                with lock:
                    claims.append((task.pk, user.pk))
                services.annotation_submit(task_id=task.pk, user=user, label=task.prediction.label)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return claims


@pytest.mark.django_db(transaction=True)
def test_32_annotators_at_once_never_share_a_task():
    project = factories.project(labeling={"gold_rate": 0.0})
    _route(project, 400)
    claims = _annotate_all(project, 32)
    per_task = Counter(task for task, _ in claims)
    assert len(per_task) == 400 and set(per_task.values()) == {1}  # every task claimed, once
    assert set(Task.objects.values_list("status", flat=True)) == {"done"}
    assert len({user for _, user in claims}) > 1


@pytest.mark.django_db(transaction=True)
def test_with_overlap_3_each_task_gets_3_distinct_annotators():
    project = factories.project(labeling={"gold_rate": 0.0})
    Project.objects.filter(pk=project.pk).update(routing={**project.routing, "annotations_per_task": 3})
    project.refresh_from_db()
    _route(project, 150)
    claims = _annotate_all(project, 32)
    per_task = Counter(task for task, _ in claims)
    assert len(per_task) == 150 and set(per_task.values()) == {3}
    assert len(set(claims)) == len(claims)  # no annotator twice on a task
    annotators = Counter(Annotation.objects.values_list("task_id", flat=True))
    assert set(annotators.values()) == {3}
    assert set(Task.objects.values_list("status", flat=True)) == {"done"}


SQLITE_SCRIPT = r"""
import os, sys, threading, time
from collections import Counter
import django
django.setup()
from django.core.management import call_command
from django.db import connection
call_command("migrate", verbosity=0)
from accounts.services import account_upsert
from flywheel.projects import project_create
from flywheel.ingest.services import predictions_ingest
from flywheel.ingest.validation import PredictionInput
from labeling import services
from labeling.models import Task

overlap = int(sys.argv[1])
project = project_create(slug="p", name="P", labels=["a", "b"], features=[{"name": "x", "type": "numeric"}],
                         routing_policy={"threshold": 0.0, "audit_rate": 0.0, "annotations_per_task": overlap},
                         labeling={"gold_rate": 0.0})
predictions_ingest(project=project, items=[
    PredictionInput(external_id=str(i), model_version="v1", label="a", confidence=0.5, probabilities=None,
                    features={"x": i}, input={}, metadata={}, created_at=None) for i in range(60)])
users = [account_upsert(username=f"u{i}", role="annotator", projects=[project])[0] for i in range(8)]
claims, lock, barrier = [], threading.Lock(), threading.Barrier(8)

errors = []

def work(user):
    try:
        loop(user)
    except BaseException as exc:
        errors.append(repr(exc))
    finally:
        connection.close()

def loop(user):
    barrier.wait()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        task = services.task_claim(project=project, user=user)
        if task is None:
            if not Task.objects.filter(status__in=["open", "leased"]).exists():
                break
            time.sleep(0.01)
            continue
        with lock:
            claims.append((task.pk, user.pk))
        services.annotation_submit(task_id=task.pk, user=user, label="a")

threads = [threading.Thread(target=work, args=(u,)) for u in users]
[t.start() for t in threads]
[t.join() for t in threads]
per_task = Counter(t for t, _ in claims)
assert not errors, errors
print(len(per_task), sorted(set(per_task.values())), len(set(claims)) == len(claims))
"""


@pytest.mark.parametrize("overlap", [1, 2])
def test_the_portable_claim_is_correct_on_sqlite(tmp_path, overlap):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_"))}
    env.update({"SECRET_KEY": "sqlite-test", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
                "DJANGO_SETTINGS_MODULE": "config.settings", "LOG_LEVEL": "WARNING"})
    result = subprocess.run([sys.executable, "-c", SQLITE_SCRIPT, str(overlap)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    tasks, claims_per_task, distinct = result.stdout.split()[0], result.stdout.split("[")[1].split("]")[0], \
        result.stdout.split()[-1]
    assert tasks == "60" and claims_per_task == str(overlap) and distinct == "True", result.stdout
