"""Celery tasks of the labeling app: thin, named, safe to run twice."""

from celery import shared_task

from labeling import services


@shared_task(name="labeling.leases_sweep", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=120, time_limit=180)
def leases_sweep() -> int:
    """Return the tasks of expired leases to the queue (beat, every minute)."""
    return services.leases_sweep()
