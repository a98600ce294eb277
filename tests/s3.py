"""A local S3-compatible server for the tests: moto's server mode on a loopback port,
reached by boto3 over HTTP like any S3 (nothing in boto3 is patched)."""

import socket

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

ACCESS_KEY = "flywheel-test"
SECRET_KEY = "flywheel-test-secret"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """moto's threaded server. Its buckets live in this process, so they survive a stop
    and a start on the same port: an outage, then recovery."""

    def __init__(self):
        self.port = _free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._server: ThreadedMotoServer | None = None

    def start(self) -> "S3Server":
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop answering: the listening socket is closed too, so a client's next request is
        refused at once (ThreadedMotoServer.stop alone leaves it open and clients hang)."""
        if self._server is not None:
            self._server.stop()
            self._server._server.server_close()
            self._server = None

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY,
                            config=Config(retries={"max_attempts": 2}, s3={"addressing_style": "path"}))

    def settings_for(self, bucket: str) -> dict:
        """The settings that point the service's storage at `bucket` on this server."""
        return {"FLYWHEEL_STORAGE_BACKEND": "s3", "S3_BUCKET": bucket, "S3_PREFIX": "flywheel-test",
                "S3_ENDPOINT_URL": self.endpoint_url, "S3_REGION": REGION, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
