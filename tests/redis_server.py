"""A redis-server of a test's own on a loopback port: stopping it disturbs no other test.
By default it keeps nothing on disk, so a restart comes back empty, as a broker that lost
its queued messages; a durable one writes every command to its append-only file first,
so it comes back from a crash with its data."""

import shutil
import subprocess
import tempfile
import time

import redis

from tests.s3 import _free_port


class RedisServer:
    def __init__(self, *, durable: bool = False):
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None
        self.durable = durable
        self.directory = tempfile.mkdtemp(prefix="flywheel-redis-") if durable else None

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        persistence = (["--dir", self.directory, "--appendonly", "yes", "--appendfsync", "always"] if self.durable
                       else ["--appendonly", "no"])
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", *persistence],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.1)
            except redis.BusyLoadingError:  # a durable one replaying its file
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """SIGKILL: no goodbye to clients, no last write."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=5)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
