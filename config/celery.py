"""The Celery app and its beat schedule. Tasks live in each app's tasks.py."""

import os

from celery import Celery
from celery.worker.consumer import Consumer as CeleryConsumer

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("flywheel")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The beat schedule is CELERY_BEAT_SCHEDULE in config/settings.py, read with the rest.


class Consumer(CeleryConsumer):
    """Celery's consumer, surviving a broker loss while the worker holds a task.

    When the broker drops, Celery collects the broken connection (which detaches its
    transport) and then closes it again. If the worker held unacknowledged messages (an
    acks-late task running), that second close tries to hand them back to the broker
    through the detached transport and raises AttributeError, which Celery treats as
    unrecoverable: the whole worker exits. The messages are safe without that hand-back
    (the broker redelivers them after the visibility timeout), so the second close's
    failure is dropped and the worker goes on to reconnect
    (tests/test_worker_broker_loss.py)."""

    def on_connection_error_after_connected(self, exc):
        connection = self.connection
        if connection is not None:
            close = connection.close

            def close_collected():
                try:
                    close()
                except AttributeError:
                    pass

            connection.close = close_collected
        super().on_connection_error_after_connected(exc)
