"""Dataset versions on the embedded defaults a new user starts with: SQLite (no COPY; the
ORM path), Celery run inline, files on disk."""

import os
import subprocess
import sys

from tests.live import ROOT  # noqa: E402

SCRIPT = """
from flywheel.datasets import services as datasets
from flywheel.projects import project_create
from flywheel.ingest.services import predictions_ingest
from flywheel.ingest.validation import PredictionInput
from labeling.models import Label
from flywheel.models import Prediction

project = project_create(slug="embedded", name="Embedded", labels=["a", "b"],
                         features=[{"name": "x", "type": "numeric"}, {"name": "c", "type": "categorical"}])
predictions_ingest(project=project, items=[
    PredictionInput(external_id=f"e-{i}", model_version="v1", label="a", confidence=0.9, probabilities=None,
                    features={"x": i / 2, "c": "q,\\"r\\""}, input={"text": "t"}, metadata={}, created_at=None)
    for i in range(50)])
Label.objects.bulk_create([Label(project=project, prediction=p, label="ab"[p.pk % 2], source="annotation")
                           for p in Prediction.objects.filter(project=project)[:40]])
version = datasets.dataset_version_create(project=project, note="embedded")
version.refresh_from_db()
print(version.status, version.counts["rows"], version.error)
"""


def test_a_dataset_version_builds_and_pulls_on_embedded_defaults(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_", "FLYWHEEL_", "S3_"))}
    env.update({"SECRET_KEY": "embedded-test", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
                "FLYWHEEL_STORAGE_ROOT": str(tmp_path / "storage"), "DJANGO_SETTINGS_MODULE": "config.settings",
                "LOG_LEVEL": "WARNING"})

    def manage(*args):
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    manage("migrate", "--noinput", "-v", "0")
    assert manage("shell", "-v", "0", "-c", SCRIPT).split()[:2] == ["ready", "40"]
    out = manage("dataset_pull", "embedded", "1", str(tmp_path / "pulled"))
    assert "40 rows" in out and (tmp_path / "pulled" / "manifest.json").exists()
