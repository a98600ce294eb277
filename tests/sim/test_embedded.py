"""The embedded defaults a new user starts with: SQLite, eager Celery, files on disk."""

import os
import subprocess
import sys

from tests.live import ROOT  # noqa: E402


def test_the_demo_runs_on_embedded_defaults(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_", "FLYWHEEL_"))}
    env.update({"SECRET_KEY": "embedded-test", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
                "FLYWHEEL_STORAGE_ROOT": str(tmp_path / "storage"), "DJANGO_SETTINGS_MODULE": "config.settings"})

    def manage(*args):
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    manage("migrate", "--noinput", "-v", "0")
    out = manage("flywheel_demo", "--traffic", "120")
    assert "annotator" in out and "http://127.0.0.1:8000/label/" in out
    assert "champion model run-1" in out, out
    # `make run PORT=8765` passes where it serves: the links say so.
    again = manage("flywheel_demo", "--traffic", "120", "--url", "http://127.0.0.1:8765")
    assert "0 new predictions logged" in again
    assert "http://127.0.0.1:8765/label/" in again and ":8000" not in again
    counts = manage("shell", "-v", "0", "-c",
                    "from flywheel.models import Prediction, TrainingRun; from labeling.models import Task; "
                    "print(Prediction.objects.count(), Task.objects.filter(prediction__external_id__startswith='demo-')"
                    ".count(), TrainingRun.objects.count())")
    predictions, routed, runs = map(int, counts.split())
    # 150 labeled seed digits and 120 gold answers, then the 120 production predictions,
    # of which some (not all) are routed; the second run trained no second model.
    assert predictions == 150 + 120 + 120 and 0 < routed < 120 and runs == 1
