"""Fixtures of the monitoring tests: production-like traffic, and a real HTTP server on
loopback standing in for the third-party webhook receiver."""

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from accounts.models import Role
from tests import factories

WEBHOOK_SECRET = "receiver-shared-secret-0123456789"
COLORS = ["red", "green", "blue"]


def traffic(n: int, *, seed: int, start: datetime, hours: float = 3.0, prefix: str = "p",
            f0_shift: float = 0.0, f1_shift: float = 0.0, color_p=(0.5, 0.3, 0.2),
            correlation: float = 0.0) -> list[dict]:
    """Predictions like an app sends them: f0 ~ N(0, 1), f1 ~ N(5, 2) with the given
    correlation to f0, color from color_p, labels and confidence the same every time, made
    over `hours` from `start`. A shift is in standard deviations of the feature."""
    rng = np.random.default_rng(seed)
    f0 = rng.normal(0, 1, n)
    f1 = 5 + 2 * f1_shift + 2 * (correlation * f0 + np.sqrt(1 - correlation ** 2) * rng.normal(0, 1, n))
    f0 = f0 + f0_shift
    colors = rng.choice(COLORS, size=n, p=color_p)
    labels = rng.choice(10, size=n, p=[0.2, 0.15, 0.15, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05])
    confidence = rng.uniform(0.72, 1.0, n)
    offsets = np.sort(rng.uniform(0, hours * 3600, n))
    return [
        {"id": f"{prefix}-{i}", "model_version": "v1", "label": str(labels[i]),
         "confidence": round(float(confidence[i]), 4),
         "features": {"f0": round(float(f0[i]), 5), "f1": round(float(f1[i]), 5), "color": str(colors[i])},
         "created_at": (start + timedelta(seconds=float(offsets[i]))).isoformat()}
        for i in range(n)
    ]


def post_traffic(client, predictions: list[dict], slug: str = "digits") -> None:
    for i in range(0, len(predictions), 1000):
        response = client.post(f"/api/v1/projects/{slug}/predictions/", {"predictions": predictions[i:i + 1000]},
                               format="json")
        assert response.status_code == 201, response.json()


def hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def now():
    return datetime.now(UTC)


@pytest.fixture
def ops_user_client(project):
    user, token = factories.user_with_role(Role.OPS, project)
    client = factories.api_client(token)
    client.user = user
    return client


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)

    def signature_valid(self, secret: str = WEBHOOK_SECRET) -> bool:
        timestamp = self.headers["X-Flywheel-Timestamp"]
        expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers["X-Flywheel-Signature"], f"sha256={expected}")


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    # Status codes to answer with, in order; 200 once they run out.
    statuses: list[int] = field(default_factory=list)


@pytest.fixture
def receiver():
    """A webhook receiver on 127.0.0.1: records every request, answers as told."""
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append(Received(self.path, dict(self.headers), body))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/drift"
    yield state
    server.shutdown()
    server.server_close()
