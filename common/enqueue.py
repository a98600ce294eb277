"""Sending Celery tasks by name, once the transaction that made their rows has committed,
without letting a broker outage fail the request that made them.

Tasks are sent by their stable name, so a service never imports the tasks module that
imports it back. Every piece of work a task does is first written to the database (a
dataset version in `building`, a training run's stage, a webhook delivery due), so a
message that cannot be sent is not lost work: the beat's sweeps find the row and send it
again once the broker is back. A request that committed its rows therefore succeeds even
while Redis is down."""

import structlog
from celery import current_app
from django.db import transaction
from kombu.exceptions import OperationalError

log = structlog.get_logger(__name__)


def enqueue_on_commit(task_name: str, *args) -> None:
    """Queue task `task_name` with `args` after the current transaction commits (at once
    outside one)."""
    transaction.on_commit(lambda: enqueue_now(task_name, *args))


def enqueue_now(task_name: str, *args) -> bool:
    """Send task `task_name` with `args` (run inline when tasks run eagerly); False, and
    logged, when the broker cannot be reached."""
    try:
        current_app.tasks[task_name].delay(*args)
    except OperationalError as exc:
        log.warning("task.enqueue_failed", task=task_name, args=list(args), error=str(exc)[:200])
        return False
    return True
