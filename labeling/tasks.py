"""Celery tasks of the labeling app: thin, named, safe to run twice."""

from celery import shared_task

from labeling import group_services, services


@shared_task(name="labeling.leases_sweep", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=120, time_limit=180)
def leases_sweep() -> int:
    """Return the groups and tasks of expired leases to the queue (beat, every minute)."""
    # Groups first: a group's members go back with it, not one by one.
    return group_services.groups_sweep() + services.leases_sweep()
