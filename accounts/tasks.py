"""Celery tasks of the accounts app: thin, named, safe to run twice."""

from celery import shared_task

from accounts import services


@shared_task(name="accounts.tokens_expired_record", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=60, time_limit=120)
def tokens_expired_record() -> int:
    """Put API keys that expired since the last run in the audit log (beat, every 5 minutes)."""
    return services.tokens_expired_record()
