"""Tasks only the tests' Celery workers know (tests/settings.py imports them): one that
holds a worker's slot for as long as a test needs, to put the worker in a given state,
records every delivery and takes effect once, to count redeliveries."""

import os
import time
from pathlib import Path

from celery import shared_task


@shared_task(name="tests.record", bind=True, acks_late=True, ignore_result=True)
def record(self, directory: str, seconds: float = 0.0, then: str | None = None) -> None:
    """Every delivery appends a line to `<task id>.runs`; the effect, a line in
    `<task id>.effect`, happens once however often the broker delivers the task, because
    the task checks its state first, as Flywheel's tasks do. It holds its pool process for
    `seconds` (unacknowledged meanwhile), then, with `then`, enqueues another tests.record
    under that task id: a task that publishes, waiting out a broker that is away."""
    root = Path(directory)
    with open(root / f"{self.request.id}.runs", "a") as runs:
        runs.write(f"{os.getpid()} {time.time():.3f}\n")
    effect = root / f"{self.request.id}.effect"
    if effect.exists():
        return
    time.sleep(seconds)
    if then:
        record.apply_async(args=[directory], task_id=then, retry=True,
                           retry_policy={"max_retries": 60, "interval_start": 0.2, "interval_step": 0.2,
                                         "interval_max": 0.5})
    with open(effect, "a") as lines:
        lines.write(f"{os.getpid()} {time.time():.3f}\n")
