"""Signed HTTP: one POST of a JSON event, signed with a shared secret, that cannot be steered
elsewhere (the address checked by url_safety is the address connected to, and redirects are
not followed). Drift alerts and external trainers are sent this way."""

import hashlib
import hmac
import http.client
import socket
import ssl
import time
from dataclasses import dataclass

from common.url_safety import URLRefused, address_for, url_check

TIMEOUT_SECONDS = 5.0
USER_AGENT = "Flywheel-Webhook/1"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """HMAC-SHA256 over "<timestamp>.<body>": the receiver recomputes it with the shared
    secret, and refuses old timestamps to stop replays."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


@dataclass(frozen=True)
class SendResult:
    status_code: int | None
    error: str
    duration_ms: float

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        """Worth trying again later: the receiver was unreachable, timed out, overloaded or broken."""
        if self.status_code is None:
            return not self.error.startswith("refused:")
        return self.status_code in (408, 425, 429) or self.status_code >= 500


def send(*, url: str, body: bytes, secret: str, event: str, delivery_id: int) -> SendResult:
    """POST one signed event. Never raises: the outcome says what happened."""
    started = time.perf_counter()

    def done(status_code: int | None, error: str = "") -> SendResult:
        return SendResult(status_code, error[:500], (time.perf_counter() - started) * 1000)

    if not secret:
        return done(None, "refused: there is no secret to sign the request with")
    try:
        target = url_check(url)
        address = address_for(target)
    except URLRefused as exc:
        return done(None, f"refused: {exc}")
    except ConnectionError as exc:
        return done(None, str(exc))
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json", "User-Agent": USER_AGENT, "X-Flywheel-Event": event,
        "X-Flywheel-Delivery": str(delivery_id), "X-Flywheel-Timestamp": str(timestamp),
        "X-Flywheel-Signature": signature(secret, timestamp, body),
    }
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(target.host, target.port, address, TIMEOUT_SECONDS)
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(64 * 1024)
        return done(response.status, "" if 200 <= response.status < 300 else f"HTTP {response.status}")
    except (OSError, http.client.HTTPException) as exc:
        return done(None, f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()
