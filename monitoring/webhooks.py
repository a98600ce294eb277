"""Alert webhooks on the wire: which URLs may be called, how a body is signed, and one POST
that cannot be steered elsewhere (the address checked is the address connected to, and
redirects are not followed)."""

import hashlib
import hmac
import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

TIMEOUT_SECONDS = 5.0
USER_AGENT = "Flywheel-Webhook/1"
MAX_URL_CHARS = 500


class WebhookURLError(ValueError):
    """The URL may not be called: the reason is safe to show to the user who set it."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str


def _trusted_hosts() -> set[str]:
    return {h.strip().lower() for h in settings.FLYWHEEL_WEBHOOK_TRUSTED_HOSTS if h.strip()}


def _is_loopback_name(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_check(url: str) -> Target:
    """Check what can be checked without the network: https, or http to a trusted host
    (FLYWHEEL_WEBHOOK_TRUSTED_HOSTS) or to loopback when FLYWHEEL_WEBHOOK_ALLOW_LOOPBACK is
    on; no credentials in the URL."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise WebhookURLError(f"Must be a URL of at most {MAX_URL_CHARS} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookURLError("Not a valid URL.") from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("https", "http"):
        raise WebhookURLError("Must be an https:// URL.")
    if not host:
        raise WebhookURLError("The URL has no host.")
    if parts.username or parts.password:
        raise WebhookURLError("Credentials do not belong in the URL; the body is signed with the secret instead.")
    trusted = host in _trusted_hosts()
    loopback = _is_loopback_name(host)
    if loopback and not (trusted or settings.FLYWHEEL_WEBHOOK_ALLOW_LOOPBACK):
        raise WebhookURLError("Loopback addresses are not allowed (FLYWHEEL_WEBHOOK_ALLOW_LOOPBACK is off).")
    if scheme == "http" and not (trusted or loopback):
        raise WebhookURLError("Must be https://, unless the host is in FLYWHEEL_WEBHOOK_TRUSTED_HOSTS.")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, port or (443 if scheme == "https" else 80), path)


def address_for(target: Target) -> str:
    """The address to connect to: every address the host resolves to must be public, so
    a name cannot point the service at itself or at an internal network (unless the host
    is trusted, or loopback is allowed and the address is loopback)."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConnectionError(f"Cannot resolve {target.host}: {exc}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise ConnectionError(f"{target.host} has no address.")
    if target.host in _trusted_hosts():
        return addresses[0]
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if ip.is_loopback and settings.FLYWHEEL_WEBHOOK_ALLOW_LOOPBACK:
            continue
        if not ip.is_global or ip.is_multicast:
            raise WebhookURLError(f"{target.host} resolves to a non-public address ({ip}).")
    return addresses[0]


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
        return done(None, "refused: the drift policy has no webhook_secret to sign with")
    try:
        target = url_check(url)
        address = address_for(target)
    except WebhookURLError as exc:
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
