"""A real Celery worker (and beat) in processes of their own, on the Redis broker and the
test database, for tests of behaviour that needs one: redelivery, worker death, schedules.
They consume the test session's own queue (tests/settings.py), so parallel test runs
never take each other's tasks."""

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from django.conf import settings

from tests.live import ROOT, database_url

BROKER = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")


def worker_env(queue: str, **extra) -> dict:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings", "SECRET_KEY": settings.SECRET_KEY,
        "DATABASE_URL": database_url(), "CELERY_BROKER_URL": BROKER, "CELERY_TASK_ALWAYS_EAGER": "false",
        "CELERY_TASK_DEFAULT_QUEUE": queue, "LOG_LEVEL": "INFO",
        # A task whose worker vanished comes back this soon (production: an hour).
        "CELERY_VISIBILITY_TIMEOUT": "8",
        "FLYWHEEL_STORAGE_ROOT": str(settings.FLYWHEEL_STORAGE_ROOT),
        **{k: str(v) for k, v in extra.items()},
    }


class CeleryProcess:
    """`celery -A config worker|beat` with the test database; stopped on exit."""

    def __init__(self, kind: str = "worker", *, queue: str | None = None, concurrency: int = 1, **env):
        self.kind = kind
        self.queue = queue or settings.CELERY_TASK_DEFAULT_QUEUE
        self.env = worker_env(self.queue, **env)
        self.concurrency = concurrency
        self.log = tempfile.NamedTemporaryFile(prefix=f"celery-{kind}-", suffix=".log", delete=False)

    def command(self) -> list[str]:
        celery = str(Path(sys.executable).parent / "celery")
        if self.kind == "beat":
            schedule = Path(tempfile.mkdtemp()) / "beat-schedule"
            return [celery, "-A", "config", "beat", "--loglevel=INFO", "--schedule", str(schedule)]
        # The command users run (docker-compose.yml), on the test's queue under a name of its own.
        return [celery, "-A", "config", "worker", "--loglevel=INFO", "-Q", self.queue,
                f"--concurrency={self.concurrency}", "--pool=prefork", "-n", f"{self.queue}-{uuid.uuid4().hex[:4]}@%h"]

    def __enter__(self):
        self.process = subprocess.Popen(self.command(), cwd=ROOT, env=self.env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        if self.kind == "worker":
            try:
                # Generous: on a loaded machine a prefork worker takes a while to import.
                self.wait_for_log("ready.", timeout=120)
            except BaseException:
                # `with` calls no __exit__ when __enter__ raises: a worker left behind here
                # would go on to consume this session's queue with another test's settings.
                self.__exit__(None, None, None)
                raise
        return self

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"celery {self.kind} exited:\n{self.output()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"celery {self.kind} did not log {text!r}:\n{self.output()[-3000:]}")

    def pool_pids(self) -> list[int]:
        """The prefork children that run tasks (the ones a crash kills)."""
        result = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in result.stdout.split()]

    def kill(self) -> None:
        """SIGKILL the worker and its children: no chance to ack, reject or clean up."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def __exit__(self, *exc):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class broker_mode:
    """Send tasks from the test process to the real broker instead of running them eagerly."""

    def __enter__(self):
        from config.celery import app

        self.app = app
        self.saved = app.conf.task_always_eager
        app.conf.task_always_eager = False
        return self

    def __exit__(self, *exc):
        self.app.conf.task_always_eager = self.saved


def wait_until(condition, timeout: float = 30.0, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"{message} not met within {timeout} s")
