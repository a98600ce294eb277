"""The Celery app, its worker's consumer and its beat's scheduler. Tasks live in each app's
tasks.py; the beat schedule is CELERY_BEAT_SCHEDULE in config/settings.py."""

import os

import structlog
from celery import Celery, bootsteps
from celery.beat import PersistentScheduler
from celery.worker.consumer import Consumer as CeleryConsumer

from common import liveness

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("flywheel")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

log = structlog.get_logger(__name__)

# Broker features Flywheel does not use. Gossip, Mingle and Heart keep workers informed of
# each other (worker events every 2 s, a state exchange with the others at each connect);
# Control answers `celery inspect/control`, which Flywheel never calls. Each holds channels
# of its own on the broker connection, and a reconnect has to close and reopen them all.
UNUSED_STEPS = (":Gossip", ":Heart", ":Control")


class Liveness(bootsteps.StartStopStep):
    """Touches FLYWHEEL_LIVENESS_FILE from the worker's event loop while it is connected to
    its broker, so a health check (`python -m common.liveness`) finds a wedged worker."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c, **kwargs):
        from django.conf import settings

        self.path, self.seconds = settings.FLYWHEEL_LIVENESS_FILE, settings.FLYWHEEL_LIVENESS_SECONDS
        self.entry = None
        super().__init__(c, **kwargs)

    def include_if(self, c):
        return bool(self.path)

    def start(self, c):
        liveness.touch(self.path)
        self.entry = c.timer.call_repeatedly(self.seconds, liveness.touch, (self.path,))

    def stop(self, c):
        if self.entry is not None:
            self.entry.cancel()
            self.entry = None

    shutdown = stop


class Consumer(CeleryConsumer):
    """Celery's consumer, without the broker features Flywheel does not use and surviving
    any broker loss (tests/config/test_worker_broker_faults.py)."""

    class Blueprint(CeleryConsumer.Blueprint):
        default_steps = [
            *(step for step in CeleryConsumer.Blueprint.default_steps if not step.endswith(UNUSED_STEPS)),
            "config.celery:Liveness",
        ]

    def __init__(self, *args, **kwargs):
        # Mingle and Events stay (the task consumer's step requires them) but do nothing:
        # no state exchange at connect, no events sent.
        super().__init__(*args, **{**kwargs, "without_mingle": True, "without_gossip": True,
                                   "without_heartbeat": True})

    def on_connection_error_after_connected(self, exc):
        """Retire the channels of the lost connection before Celery collects it.

        Collecting the connection detaches its transport, and closing a channel detaches the
        channel, yet the channels live on in the messages they delivered: a task that ends
        after the loss acknowledges its message on one, and Celery closes them a second time.
        Any of these that needs a fresh Redis client read its parameters from the detached
        transport and raised AttributeError, which Celery treats as unrecoverable: the
        worker exited. Retired, such a channel raises a connection error instead, which every
        one of those paths already tolerates. Its messages are not handed back either: their
        tasks are still running, and the broker redelivers any it still holds after the
        visibility timeout, to tasks that check their state first."""
        channels = list(getattr(self.connection.transport, "channels", ()))  # Redis's; other brokers' stay as they are
        for channel in channels:
            channel.do_restore = False
            channel._connparams = _retired_channel_connparams
        log.warning("celery.broker_connection_lost", error=repr(exc), channels_retired=len(channels))
        super().on_connection_error_after_connected(exc)

    def ensure_connected(self, conn):
        """Touch the liveness file while waiting for the broker to come back: a worker riding
        out a broker outage is not wedged, and restarting it would end its running tasks."""
        from django.conf import settings

        path = settings.FLYWHEEL_LIVENESS_FILE
        if path:
            ensure_connection = conn.ensure_connection

            def ensure_connection_alive(*args, callback=None, **kwargs):
                def waiting():  # called about once a second between connection attempts
                    liveness.touch(path)
                    if callback is not None:
                        callback()

                return ensure_connection(*args, callback=waiting, **kwargs)

            conn.ensure_connection = ensure_connection_alive
        return super().ensure_connected(conn)


def _retired_channel_connparams(*args, **kwargs):
    raise ConnectionError("this channel's broker connection was lost")


class BeatScheduler(PersistentScheduler):
    """Celery's scheduler, touching FLYWHEEL_LIVENESS_FILE at least every
    FLYWHEEL_LIVENESS_SECONDS, so a health check finds a wedged beat. A broker loss does not
    end the beat: a send that fails is logged and the next one goes through."""

    def tick(self, *args, **kwargs):
        from django.conf import settings

        interval = super().tick(*args, **kwargs)
        if not settings.FLYWHEEL_LIVENESS_FILE:
            return interval
        liveness.touch(settings.FLYWHEEL_LIVENESS_FILE)
        return min(interval, settings.FLYWHEEL_LIVENESS_SECONDS)

