"""A short run of the soak (bench/soak.py): mixed traffic through the client while a
Celery worker is SIGKILLed, Redis restarts empty and S3 stops, then nothing lost or
stored twice, no task held forever, every resolved label in the next dataset version and
profiles equal to a recount."""

import json
import subprocess
import sys
import uuid

import psycopg
import pytest

from tests.live import ROOT


@pytest.mark.worker
def test_a_short_soak_loses_nothing_and_stores_nothing_twice(tmp_path):
    database = f"flywheel_soak_{uuid.uuid4().hex[:8]}"
    report_path = tmp_path / "soak.json"
    process = subprocess.Popen([sys.executable, "bench/soak.py", "--seconds", "30", "--database", database,
                                "--json", str(report_path)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        process.terminate()  # the soak takes its stack down on SIGTERM
        output, _ = process.communicate(timeout=60)
        pytest.fail("the soak did not stop by itself:\n" + output[-3000:])
    finally:
        with psycopg.connect("postgresql://flywheel@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    assert process.returncode == 0, output[-4000:]
    report = json.loads(report_path.read_text())
    assert report["problems"] == []
    assert report["faults_injected"] == 3
    assert report["predictions"]["acknowledged"] > 1000
    assert report["predictions"]["lost"] == 0 and report["predictions"]["duplicated"] == 0
    assert report["resent_batches"] > 0  # apps resending after a lost answer were part of it
    assert report["requests_by_kind"].get("annotate", 0) > 0 and report["requests_by_kind"].get("feedback", 0) > 0
    assert report["next_dataset_version"]["status"] == "ready"
    assert report["next_dataset_version"]["rows"] == report["next_dataset_version"]["resolved_labels"] > 0
    assert report["profiles"]["match_recount"] is True
