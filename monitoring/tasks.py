"""Celery tasks of monitoring. Thin: each calls one service; the state they act on is in
the database, so a task run twice, or not at all until the next beat, loses nothing."""

from celery import shared_task

from monitoring import services


@shared_task(name="monitoring.drift_checks_run_due", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=540, time_limit=600)
def drift_checks_run_due() -> list[int]:
    """Scheduled checks: at most one per project and interval slot (hourly by default)."""
    return services.drift_checks_run_due()


@shared_task(name=services.WEBHOOK_TASK, acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=60, time_limit=90)
def webhook_deliver(delivery_id: int) -> str | None:
    """One attempt at a webhook delivery if it is due; the retry sweep makes the later ones."""
    delivery = services.webhook_delivery_attempt(delivery_id=delivery_id)
    return delivery.state if delivery is not None else None


@shared_task(name="monitoring.webhook_deliveries_retry", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=240, time_limit=300)
def webhook_deliveries_retry() -> int:
    """Retries by the database's schedule (capped exponential backoff), not by broker
    countdowns: a pending delivery survives a broker outage and a dead worker."""
    attempted = 0
    for delivery_id in services.webhook_deliveries_due():
        if services.webhook_delivery_attempt(delivery_id=delivery_id) is not None:
            attempted += 1
    return attempted
