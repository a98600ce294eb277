"""The whole flywheel end to end, as deployed: flywheel_simulate drives the service (gunicorn
and uvicorn) through the client; a real Celery worker builds datasets and trains; datasets
and models live on the local S3 server; PostgreSQL and Redis underneath."""

import json

import numpy as np
import pytest
from django.conf import settings
from django.core.management import call_command

from accounts.models import Role
from accounts.services import account_upsert, token_issue
from flywheel.datasets.selectors import dataset_pull
from flywheel.models import DatasetVersion, Project, TrainingRun
from flywheel.training.trainers import load_model
from flywheel_client import Client
from sim.simulation import Digits, SimulationConfig
from tests.live import LiveService
from tests.worker import BROKER, CeleryProcess

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = SimulationConfig(rounds=3, traffic=80, labels_per_round=30, shift_round=2, initial_labels=40, gold=120,
                         test=300, seed=0)


def _accuracy(model, digits: Digits, *, shifted: bool) -> float:
    rng = np.random.default_rng(7)
    pixels = digits.shifted(digits.test, SMALL.shift_noise, rng) if shifted else digits.x[digits.test]
    labels, _ = model.predict(pixels, np.empty((len(pixels), 0), dtype=object))
    return float(np.mean(np.array(labels) == digits.y[digits.test]))


def test_a_short_simulation_retrains_detects_the_shift_and_keeps_verifiable_datasets(s3_bucket, s3_server, tmp_path):
    storage = s3_server.settings_for(s3_bucket)
    queued = {"CELERY_TASK_ALWAYS_EAGER": "false", "CELERY_BROKER_URL": BROKER,
              "CELERY_TASK_DEFAULT_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE}
    plot = tmp_path / "simulation.png"
    with CeleryProcess("worker", **storage) as worker, LiveService(workers=2, **storage, **queued) as service:
        call_command("flywheel_simulate", rounds=SMALL.rounds, traffic=SMALL.traffic,
                     labels_per_round=SMALL.labels_per_round, shift_round=SMALL.shift_round,
                     initial_labels=SMALL.initial_labels, gold=SMALL.gold, test=SMALL.test, seed=SMALL.seed,
                     strategy="uncertainty", url=service.url, plot=str(plot), quiet=True)
        project = Project.objects.get(slug__startswith="sim-uncertainty-")
        ops_user, _ = account_upsert(username="sim-ops", role=Role.OPS)
        ops = Client(service.url, token_issue(user=ops_user).secret)  # keys are shown once: a new one
        models = {m["name"]: m for m in ops.models(project.slug)}
        first, final = (load_model(content, sha256=sha256) for content, sha256 in (
            ops.model_artifact(project.slug, name) for name in ("run-1", ops.champion(project.slug)["name"])))
    assert "training.stage" in worker.output()  # the runs went through the worker, not inline

    summary = json.loads(plot.with_suffix(".json").read_text())
    rounds = summary["runs"][0]["results"][0]["rounds"]
    assert [r["shifted"] for r in rounds] == [False, True, True]
    # The injected noise is detected in the shifted hours, and the unshifted hour passes.
    assert rounds[0]["drifted"] is False and rounds[1]["drifted"] and rounds[2]["drifted"]
    assert 0 < rounds[0]["labels"] < rounds[-1]["labels"] <= SMALL.rounds * SMALL.labels_per_round
    assert plot.stat().st_size > 10_000

    # The champion improved: it was replaced, and the final one beats the first on the
    # traffic as it now looks (held-out digits with the same noise), judged here, not by the service.
    runs = list(TrainingRun.objects.filter(project=project).order_by("number"))
    assert len(runs) == SMALL.rounds + 1 and all(r.status == "succeeded" for r in runs)
    assert any(r.promoted for r in runs[1:]) and len(models) >= 2
    digits = Digits(SMALL)
    assert _accuracy(final, digits, shifted=True) > _accuracy(first, digits, shifted=True) + 0.08

    # Every dataset version the runs trained on is on S3 and verifies byte for byte.
    versions = list(DatasetVersion.objects.filter(project=project).order_by("number"))
    assert len(versions) == SMALL.rounds + 1 and all(v.status == "ready" for v in versions)
    for version in versions:
        s3_server.client().head_object(Bucket=s3_bucket, Key=f"{storage['S3_PREFIX']}/{version.manifest_key}")
        pulled = dataset_pull(version=version, directory=tmp_path / f"v{version.number}")
        assert pulled.rows == version.counts["rows"] and (pulled.directory / "manifest.json").exists()
    assert versions[-1].counts["rows"] > versions[0].counts["rows"]
