"""URL safety: which URLs the service may call or hand on, so a URL given to it can never
point the service, or an annotator's browser, into a private network (SSRF). Image URLs are
only handed to browsers; webhook and trainer URLs are called, on the address checked."""

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

MAX_URL_CHARS = 500


class URLRefused(ValueError):
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
        raise URLRefused(f"Must be a URL of at most {MAX_URL_CHARS} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise URLRefused("Not a valid URL.") from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("https", "http"):
        raise URLRefused("Must be an https:// URL.")
    if not host:
        raise URLRefused("The URL has no host.")
    if parts.username or parts.password:
        raise URLRefused("Credentials do not belong in the URL; the body is signed with the secret instead.")
    trusted = host in _trusted_hosts()
    loopback = _is_loopback_name(host)
    if loopback and not (trusted or settings.FLYWHEEL_WEBHOOK_ALLOW_LOOPBACK):
        raise URLRefused("Loopback addresses are not allowed (FLYWHEEL_WEBHOOK_ALLOW_LOOPBACK is off).")
    if scheme == "http" and not (trusted or loopback):
        raise URLRefused("Must be https://, unless the host is in FLYWHEEL_WEBHOOK_TRUSTED_HOSTS.")
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
            raise URLRefused(f"{target.host} resolves to a non-public address ({ip}).")
    return addresses[0]


URL_UNSAFE_RE = re.compile(r"[\x00-\x20\x7f\\]")


LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")


NUMERIC_LABEL_RE = re.compile(r"^(?:[0-9]+|0[xX][0-9a-fA-F]*)$")


def image_url_problem(value) -> str | None:
    """Why an image reference is refused, or None. The service never fetches a URL given
    to it: s3:// keys are read from its own storage, https:// URLs only go to the
    annotator's browser, and even those may not point into private networks."""
    if not isinstance(value, str) or len(value) > 2048:
        return "Must be a URL string of at most 2048 characters."
    # Browsers read a backslash as '/' and drop tabs and newlines, so the host they would
    # load could differ from the one checked here (https://127.0.0.1\\@example.com).
    if URL_UNSAFE_RE.search(value):
        return "May not contain spaces, control characters or backslashes."
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return "Is not a valid URL."
    if parts.scheme == "s3":
        if not parts.netloc or not parts.path.strip("/"):
            return "An s3:// URL needs a bucket and a key."
        if ".." in parts.path.split("/"):
            return "The key may not contain '..' segments."
        return None
    if parts.scheme != "https":
        return "Only s3:// and https:// image URLs are accepted."
    if not hostname:
        return "The URL has no host."
    address, problem = _browser_host_address(hostname)
    if problem:
        return problem
    if address is not None and not address.is_global:
        return "Points at a private, loopback or link-local address."
    return None


def _browser_host_address(hostname: str):
    """The IP address a browser would take `hostname` for (None for a name), or why the
    host is refused. Browsers (the WHATWG URL standard) map full-width and other
    look-alike characters to ASCII, percent-decode the host, ignore a trailing dot and
    read 2130706433, 0x7f000001, 0177.0.0.1 and 127.1 as IPv4 addresses: each of these
    reaches 127.0.0.1, so each is normalized before the check."""
    try:
        return ipaddress.ip_address(hostname), None
    except ValueError:
        pass
    if "%" in hostname:
        return None, "The host may not be percent-encoded."
    try:
        host = hostname.encode("idna").decode("ascii").lower().rstrip(".")
    except UnicodeError:
        return None, "The host is not a valid host name."
    if host == "localhost" or host.endswith(LOCAL_SUFFIXES):
        return None, "Points at a local host."
    if NUMERIC_LABEL_RE.match(host.rsplit(".", 1)[-1]):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host)), None
        except (OSError, ValueError):
            return None, "The host is not a valid IPv4 address."
    return None, None
