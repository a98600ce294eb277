"""Sending Celery tasks once the transaction that made their rows has committed, without
letting a broker outage fail the request that made them.

Every piece of work a task does is first written to the database (a dataset version in
`building`, a training run's stage, a webhook delivery due), so a message that cannot be
sent is not lost work: the beat's sweeps find the row and send it again once the broker is
back. A request that committed its rows therefore succeeds even while Redis is down."""

import structlog
from django.db import transaction
from kombu.exceptions import OperationalError

log = structlog.get_logger(__name__)


def enqueue_on_commit(task, *args) -> None:
    """Queue `task(*args)` after the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: enqueue_now(task, *args))


def enqueue_now(task, *args) -> bool:
    """Send `task(*args)`; False (logged) when the broker cannot be reached."""
    try:
        task.delay(*args)
    except OperationalError as exc:
        log.warning("task.enqueue_failed", task=task.name, args=list(args), error=str(exc)[:200])
        return False
    return True
