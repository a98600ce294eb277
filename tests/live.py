"""The real service in a process of its own (gunicorn with uvicorn workers), on a loopback
port, against the test database: for tests that must cross a real HTTP boundary."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """The test database pytest-django created, as a URL other processes can use."""
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


class LiveService:
    def __init__(self, *, workers: int = 1, **env):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            # The test settings: the same password hasher as the test that made the users.
            "DJANGO_SETTINGS_MODULE": "tests.settings", "SECRET_KEY": settings.SECRET_KEY,
            "DATABASE_URL": database_url(), "DATABASE_POOL": "true", "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1,localhost", "SECURE_COOKIES": "false",
            # Tests recreate projects with the same slug: nothing may be remembered across them.
            "FLYWHEEL_ACCESS_CACHE_SECONDS": "0",
            "CELERY_TASK_ALWAYS_EAGER": os.environ.get("CELERY_TASK_ALWAYS_EAGER", "true"),
            "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="flywheel-test-prom-"),
            "GUNICORN_BIND": f"127.0.0.1:{self.port}", "GUNICORN_WORKERS": str(workers),
            "LOG_LEVEL": "WARNING",
            **{k: str(v) for k, v in env.items()},
        }

    def __enter__(self):
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "config.asgi:application", "-c", "config/gunicorn.py"],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        self.log.seek(0)
        raise RuntimeError("the service did not start:\n" + self.log.read().decode()[-3000:])

    def __exit__(self, *exc):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
