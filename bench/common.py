"""Shared pieces of the benchmarks: a scratch PostgreSQL database, gunicorn on loopback, a
small HTTP load generator. Benchmarks print their figures; they are not tests."""

import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_env(database: str, **extra) -> dict:
    env = dict(os.environ)
    env.update({
        "SECRET_KEY": "bench", "DATABASE_URL": f"postgres://flywheel@127.0.0.1:5432/{database}",
        "CELERY_TASK_ALWAYS_EAGER": "true", "LOG_LEVEL": "WARNING", "DEBUG": "false", "DATABASE_POOL": "true",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


def fresh_database(name: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://flywheel@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def manage(env: dict, *args: str) -> str:
    result = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


class Gunicorn:
    """gunicorn serving the app on a loopback port, stopped on exit."""

    def __init__(self, env: dict, *, workers: int, worker_class: str = "uvicorn_worker.UvicornWorker"):
        self.port = free_port()
        self.metrics_dir = tempfile.mkdtemp(prefix="flywheel-prom-")
        self.env = {**env, "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir, "GUNICORN_BIND": f"127.0.0.1:{self.port}",
                    "GUNICORN_WORKERS": str(workers), "GUNICORN_WORKER_CLASS": worker_class}

    def __enter__(self):
        # A file, not a pipe: a pipe nobody reads fills up and then blocks every log write.
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [str(Path(PYTHON).parent / "gunicorn"), "config.asgi:application", "-c", "config/gunicorn.py"],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                status, _ = request("GET", self.port, "/healthz")
                if status == 200:
                    return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        self.log.seek(0)
        raise SystemExit("gunicorn did not start: " + self.log.read().decode(errors="replace")[-2000:])

    def __exit__(self, *exc):
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


def request(method: str, port: int, path: str, body: bytes | None = None, token: str | None = None,
            conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if own:
        conn.close()
    return response.status, data


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def median(values):
    return statistics.median(values)
