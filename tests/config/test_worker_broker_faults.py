"""A Celery worker, and the beat, outlive their broker going away at any moment: idle, while
the worker holds an acks-late task, while both its processes are busy, while a task finishes
and acknowledges, while a task publishes another, while messages stream in, during the
reconnection itself and twice in a row; with a Redis that comes back empty and one that
comes back with its data. Afterwards the worker runs new tasks, finishes the ones it held,
and a redelivered task takes effect once. The moments fall at random offsets;
FLYWHEEL_FAULT_SEED replays a run."""

import os
import random
import signal
import time
import uuid
from pathlib import Path

import pytest
from celery import Celery

from common import liveness
from tests.redis_server import RedisServer
from tests.worker import CeleryProcess, wait_until

SEED = int(os.environ.get("FLYWHEEL_FAULT_SEED") or random.randrange(1_000_000))
MOMENTS_PER_BROKER = 10
# A message whose acknowledgement was lost with the broker (Redis kept it as unacknowledged)
# is delivered again after the visibility timeout: an hour in production, seconds here, so
# that every redelivery happens within the test and is counted (the tasks take 2 s at most).
REDELIVERY_SECONDS = 8


class Tasks:
    """tests.record tasks sent to one broker, and what their runs left in a directory."""

    def __init__(self, broker: RedisServer, queue: str, directory: Path):
        self.broker, self.queue, self.directory = broker, queue, directory
        self.sent: list[str] = []
        # A connection of its own to this broker: CELERY_BROKER_URL in the environment
        # would take precedence over an app's `broker` argument. Not the current app: made
        # current, it would take over every later task this test process sends (not eager,
        # to a queue no worker reads), and the webhooks, runs and demos of later tests would
        # never happen.
        self.app = Celery(set_as_current=False)

    def send(self, seconds: float = 0.0, then: str | None = None) -> str:
        task_id = uuid.uuid4().hex
        with self.app.connection_for_write(self.broker.url) as connection:
            self.app.send_task("tests.record", args=[str(self.directory), seconds, then], task_id=task_id,
                               queue=self.queue, connection=connection)
        self.sent.append(task_id)
        return task_id

    def lines(self, task_id: str, kind: str) -> int:
        path = self.directory / f"{task_id}.{kind}"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def started(self, task_id: str) -> bool:
        return self.lines(task_id, "runs") > 0

    def done(self, task_id: str) -> bool:
        return self.lines(task_id, "effect") > 0


def settled(condition, process: CeleryProcess, timeout: float = 40) -> bool:
    """Wait for the condition while the process runs; False if it exited or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.process.poll() is None:
        if condition():
            return True
        time.sleep(0.05)
    return process.process.poll() is None and condition()


def outage(broker: RedisServer, rng: random.Random, low: float = 0.3, high: float = 1.0) -> None:
    broker.stop()
    time.sleep(rng.uniform(low, high))
    broker.start()


# Each moment puts the worker in a state, takes the broker away at a random offset and
# brings it back; it returns the tasks the worker held, which it must still finish.


def idle(tasks, rng):
    time.sleep(rng.uniform(0, 2.0))
    outage(tasks.broker, rng)
    return []


def holding_a_task(tasks, rng):
    held = tasks.send(seconds=2.0)
    wait_until(lambda: tasks.started(held), timeout=20, message="the task started")
    time.sleep(rng.uniform(0, 1.8))
    outage(tasks.broker, rng)
    return [held]


def acknowledging(tasks, rng):
    # The task ends, and acknowledges its message, around the moment the broker goes.
    held = tasks.send(seconds=1.0)
    wait_until(lambda: tasks.started(held), timeout=20, message="the task started")
    time.sleep(rng.uniform(0.8, 1.2))
    outage(tasks.broker, rng)
    return [held]


def full(tasks, rng):
    # Both pool processes busy: the worker reads nothing from the broker (its prefetch window
    # is full), so it learns of the loss only when the tasks end and their acknowledgements
    # fail. It must then reconnect rather than wait, window still full, for ever.
    held = [tasks.send(seconds=1.5), tasks.send(seconds=1.5)]
    wait_until(lambda: all(map(tasks.started, held)), timeout=20, message="both tasks started")
    tasks.broker.stop()
    wait_until(lambda: all(map(tasks.done, held)), timeout=20, message="both tasks ended")
    time.sleep(rng.uniform(0.1, 0.5))
    tasks.broker.start()
    return held


def publishing(tasks, rng):
    # The task publishes another at its end, while the broker is away: it waits, then sends
    # it to the broker that came back (empty or not, so the second task is never lost).
    child = uuid.uuid4().hex
    held = tasks.send(seconds=1.0, then=child)
    tasks.sent.append(child)
    wait_until(lambda: tasks.started(held), timeout=20, message="the task started")
    time.sleep(1.0 - rng.uniform(0.25, 0.6))
    outage(tasks.broker, rng, low=0.8, high=1.3)
    return [held, child]


def consuming(tasks, rng):
    burst = [tasks.send() for _ in range(20)]
    time.sleep(rng.uniform(0, 0.3))
    tasks.broker.stop()
    held = [task_id for task_id in burst if tasks.started(task_id)]
    time.sleep(rng.uniform(0.3, 1.0))
    tasks.broker.start()
    return burst if tasks.broker.durable else held


def reconnecting(tasks, rng):
    outage(tasks.broker, rng)
    time.sleep(rng.uniform(0, 1.5))  # the worker is reconnecting, or just did
    outage(tasks.broker, rng)
    return []


def twice_in_a_row(tasks, rng):
    outage(tasks.broker, rng)
    time.sleep(rng.uniform(0, 0.3))
    outage(tasks.broker, rng)
    return []


MOMENTS = [idle, holding_a_task, acknowledging, full, publishing, consuming, reconnecting, twice_in_a_row]


@pytest.mark.worker
@pytest.mark.parametrize("durable", [False, True], ids=["comes-back-empty", "comes-back-with-its-data"])
def test_the_worker_outlives_its_broker_going_away_at_any_moment(tmp_path, durable):
    rng = random.Random(f"{SEED}-{durable}")
    # Every kind of moment once, then more drawn at random, in a random order.
    moments = MOMENTS + rng.choices(MOMENTS, k=MOMENTS_PER_BROKER - len(MOMENTS))
    rng.shuffle(moments)
    print(f"FLYWHEEL_FAULT_SEED={SEED}: {[moment.__name__ for moment in moments]}")
    alive_file = tmp_path / "worker.alive"
    with RedisServer(durable=durable) as broker, \
            CeleryProcess(concurrency=2, CELERY_BROKER_URL=broker.url, FLYWHEEL_LIVENESS_FILE=alive_file,
                          FLYWHEEL_LIVENESS_SECONDS=0.5, CELERY_VISIBILITY_TIMEOUT=REDELIVERY_SECONDS) as worker:
        tasks = Tasks(broker, worker.queue, tmp_path)

        def context(what):
            return f"{what} (FLYWHEEL_FAULT_SEED={SEED}, durable={durable}):\n{worker.output()[-4000:]}"

        must_finish = []
        for moment in moments:
            # The tasks it held, and a new one sent once the broker is back.
            expected = [*moment(tasks, rng), tasks.send()]
            must_finish += expected
            assert settled(lambda expected=expected: all(map(tasks.done, expected)), worker), context(
                f"the worker exited or did not finish its tasks after {moment.__name__}")

        # Quiet: nothing waits in the queue and nothing is held unacknowledged, so no
        # redelivery is still to come.
        client = broker.client()
        assert settled(lambda: client.llen(worker.queue) == 0 and client.hlen("unacked") == 0, worker,
                       timeout=40 + 2 * REDELIVERY_SECONDS), context(
            f"the worker exited or the broker still held messages: {client.llen(worker.queue)} queued, "
            f"{client.hlen('unacked')} unacknowledged, the restore lock expiring in {client.ttl('unacked_mutex')} s")
        assert liveness.age(str(alive_file)) < 5, context("the worker left its liveness file stale")

    # Every task the worker held took effect once, however often it ran; none took effect
    # twice, and with a broker that kept its data none was lost.
    redelivered = [task_id for task_id in tasks.sent if tasks.lines(task_id, "runs") > 1]
    print(f"{len(tasks.sent)} tasks sent, {len(redelivered)} delivered more than once")
    assert [task_id for task_id in must_finish if tasks.lines(task_id, "effect") != 1] == []
    assert [task_id for task_id in tasks.sent if tasks.lines(task_id, "effect") > 1] == []
    if durable:
        assert [task_id for task_id in tasks.sent if not tasks.done(task_id)] == []


@pytest.mark.worker
def test_the_beat_outlives_its_broker_going_away_while_it_publishes(tmp_path):
    rng = random.Random(f"{SEED}-beat")
    print(f"FLYWHEEL_FAULT_SEED={SEED}")
    alive_file = tmp_path / "beat.alive"
    with RedisServer() as broker, \
            CeleryProcess("beat", CELERY_BROKER_URL=broker.url, FLYWHEEL_TEST_BEAT_TICK=0.1,
                          FLYWHEEL_TEST_BEAT_DIRECTORY=tmp_path, FLYWHEEL_LIVENESS_FILE=alive_file,
                          FLYWHEEL_LIVENESS_SECONDS=0.5) as beat:
        beat.wait_for_log("Sending due task tests.tick", timeout=30)
        client = broker.client()
        for _ in range(4):
            time.sleep(rng.uniform(0, 1.0))
            outage(broker, rng)  # the beat sends every 0.1 s, so it is sending when the broker goes
            assert settled(lambda: client.llen(beat.queue) >= 3, beat), (
                f"the beat exited or sent nothing once the broker was back (FLYWHEEL_FAULT_SEED={SEED}):\n"
                + beat.output()[-3000:])
        assert liveness.age(str(alive_file)) < 2


@pytest.mark.worker
def test_the_health_check_passes_while_the_worker_waits_for_its_broker_and_fails_once_it_is_wedged(tmp_path):
    alive_file = str(tmp_path / "worker.alive")
    with RedisServer() as broker, \
            CeleryProcess(CELERY_BROKER_URL=broker.url, FLYWHEEL_LIVENESS_FILE=alive_file,
                          FLYWHEEL_LIVENESS_SECONDS=0.5) as worker:
        assert liveness.main([alive_file, "--max-age", "2"]) == 0
        broker.stop()
        worker.wait_for_log("Trying again in", timeout=20)
        # Waiting for the broker is not being wedged: a restart would only end its tasks.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert liveness.main([alive_file, "--max-age", "2"]) == 0
            time.sleep(0.5)
        broker.start()
        wait_until(lambda: worker.output().count("Connected to redis") == 2, timeout=20, message="reconnected")
        os.kill(worker.process.pid, signal.SIGSTOP)  # the event loop no longer turns
        try:
            wait_until(lambda: liveness.main([alive_file, "--max-age", "2"]) == 1, timeout=10,
                       message="the health check failed for a wedged worker")
        finally:
            os.kill(worker.process.pid, signal.SIGCONT)  # so that the worker stops as usual
