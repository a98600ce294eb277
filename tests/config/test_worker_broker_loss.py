"""A Celery worker outlives its broker going away while it holds a task: it reconnects and
takes new work, and no supervisor has to restart it."""

import pytest
from celery import Celery

from tests.redis_server import RedisServer
from tests.worker import CeleryProcess, wait_until


def send_hold(broker: RedisServer, queue: str, seconds: float, done_path) -> None:
    # A connection of its own to this broker: CELERY_BROKER_URL in the environment would
    # take precedence over an app's `broker` argument.
    app = Celery()
    with app.connection_for_write(broker.url) as connection:
        app.send_task("tests.hold", args=[seconds, str(done_path)], queue=queue, connection=connection)


@pytest.mark.worker
def test_the_worker_reconnects_after_the_broker_drops_while_it_holds_a_task(tmp_path):
    held, after = tmp_path / "held", tmp_path / "after"
    with RedisServer() as broker, CeleryProcess(concurrency=2, CELERY_BROKER_URL=broker.url) as worker:
        # One pool process holds an acks-late task (unacknowledged) while the consumer
        # waits on the broker for more: the state in which a broker loss used to take the
        # whole worker down.
        send_hold(broker, worker.queue, 6, held)
        worker.wait_for_log("Task tests.hold[", timeout=30)
        broker.stop()
        worker.wait_for_log("Connection to broker lost", timeout=30)
        broker.start()  # on the same port, empty
        wait_until(lambda: worker.output().count("Connected to redis") == 2 or worker.process.poll() is not None,
                   timeout=60, message="the worker reconnected or exited")
        assert worker.process.poll() is None, "the worker exited:\n" + worker.output()[-3000:]
        send_hold(broker, worker.queue, 0, after)
        wait_until(after.exists, timeout=60, message="a task sent after the broker came back ran")
        wait_until(held.exists, timeout=30, message="the task held through the outage finished")
        assert worker.process.poll() is None, "the worker exited:\n" + worker.output()[-3000:]
