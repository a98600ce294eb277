"""Leased jobs: long work recorded on a database row that one attempt at a time holds.

A job row (a dataset version being built, a training run at one of its stages) carries a
token and a heartbeat. An attempt claims the row by writing a fresh token under the row's
lock, beats while it works, and writes its results only while the token is still its own.
A row whose heartbeat went stale lost its worker: the next attempt (the redelivered task,
or the beat's sweep) takes it over, and the old attempt, should it wake up, finds the row
no longer its own and stops. Failures worth another attempt (the store, the database or a
remote service away for a moment) are retried by Celery with capped exponential backoff;
when the retries run out, the job is failed with the reason."""

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db.models import Q
from django.utils import timezone

from common.storage import StorageUnavailable

log = structlog.get_logger(__name__)


class Unreachable(Exception):
    """A service the job needs did not answer (an external trainer, say): worth another attempt."""


# Failures worth another attempt: the store, the database or a remote service was away for
# a moment. Anything else (a refusal, a bug, bad data) fails the job at once with its reason.
TRANSIENT_ERRORS = (StorageUnavailable, Unreachable, OperationalError, InterfaceError)

HEARTBEAT_SECONDS = 5.0


class Superseded(Exception):
    """Another attempt holds the job now, or the job moved on: stop quietly."""


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff: `base_seconds` after the first failure, doubling, at most
    `max_seconds`."""

    base_seconds: float
    max_seconds: float

    def seconds(self, failures_before: int) -> float:
        """The wait before the next try, after `failures_before` earlier failed tries."""
        return min(self.max_seconds, self.base_seconds * 2 ** max(0, failures_before))


@dataclass(frozen=True)
class Lease:
    """How one kind of job row is held: its token column, and after how long without a
    heartbeat (setting `stale_setting`, in seconds) its holder counts as dead."""

    model: type
    token_field: str
    stale_setting: str
    heartbeat_field: str = "heartbeat_at"

    def stale_after(self) -> timedelta:
        return timedelta(seconds=getattr(settings, self.stale_setting))

    def is_stale(self, row, now: datetime | None = None) -> bool:
        """No sign of life for too long: no heartbeat (or, never started, no change) lately."""
        last = getattr(row, self.heartbeat_field) or row.updated_at
        return last is None or (now or timezone.now()) - last > self.stale_after()

    def is_held(self, row, now: datetime | None = None) -> bool:
        """A live attempt holds the row."""
        return bool(getattr(row, self.token_field)) and not self.is_stale(row, now)

    def stale_q(self, now: datetime) -> Q:
        """Rows whose holder stopped beating, or that were queued and never started (their
        message was lost, or the broker was away when they were queued)."""
        before = now - self.stale_after()
        return Q(**{f"{self.heartbeat_field}__lt": before}) | Q(
            **{f"{self.heartbeat_field}__isnull": True, "updated_at__lt": before})

    @staticmethod
    def new_token() -> str:
        return uuid.uuid4().hex

    def update_if_held(self, pk, token: str, *, where: dict | None = None, **fields) -> None:
        """Write to the row only while this attempt still holds it; else raise Superseded."""
        rows = self.model.objects.filter(pk=pk, **{self.token_field: token}, **(where or {}))
        if not rows.update(**fields, updated_at=timezone.now()):
            raise Superseded(pk)

    @contextlib.contextmanager
    def heartbeat(self, pk, token: str, *, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
        """Beat from a thread of its own while the work runs, so a dead worker is told from a
        slow one however long one step of the work takes."""
        stop = threading.Event()

        def beat():
            from django.db import connection

            try:
                while not stop.wait(every):
                    self.model.objects.filter(pk=pk, **{self.token_field: token}).update(
                        **{self.heartbeat_field: timezone.now()})
            except (OperationalError, InterfaceError):
                pass  # the database is away: the work itself will find out and be retried
            finally:
                connection.close()

        thread = threading.Thread(target=beat, name="job-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def run_or_retry(task, work: Callable[[], object], *, backoff: Backoff, max_retries: int,
                 give_up: Callable[[str], object]):
    """Run `work()` for a bound Celery task. On a transient error, retry the task after a
    capped backoff, or, once `max_retries` retries failed, call `give_up(reason)`. Run
    inline (the embedded default, the tests) there is no queue to come back through, and
    Celery would hand the Retry to the caller: the retry runs in place."""
    try:
        return work()
    except TRANSIENT_ERRORS as exc:
        retries = task.request.retries
        if retries >= max_retries:
            give_up(f"Gave up after {retries + 1} attempts: {type(exc).__name__}: {exc}")
            return None
        countdown = backoff.seconds(retries)
        log.info("job.retry", task=task.name, args=list(task.request.args or ()), retries=retries,
                 countdown=countdown, error=str(exc)[:200])
        if task.request.is_eager:
            task.apply(args=task.request.args, kwargs=task.request.kwargs, retries=retries + 1)
            return None
        raise task.retry(exc=exc, countdown=countdown) from None
