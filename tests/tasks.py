"""Tasks only the tests' Celery workers know (tests/settings.py imports them): a task that
holds a worker's slot for as long as a test needs, to put the worker in a given state."""

import time
from pathlib import Path

from celery import shared_task


@shared_task(name="tests.hold", acks_late=True, ignore_result=True)
def hold(seconds: float, done_path: str) -> None:
    """Keep a pool process busy for `seconds` (its message unacknowledged meanwhile), then
    leave a file to say it finished."""
    time.sleep(seconds)
    Path(done_path).write_text("done")
