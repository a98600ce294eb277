"""What the ASGI gateways in front of Django share. They answer the hottest API routes
themselves (ingestion in flywheel.gateway; an annotator's claims and annotations in
labeling.gateway), with the same checks, services and error bodies as the DRF views,
but without Django's request cycle around them and with their database work on threads
of their own.

Why threads of their own: under ASGI, Django runs every sync view of a worker on one
thread, one request after another, so a cheap request waits behind whatever slower one
arrived first. The gateways' work runs on a small pool instead, next to that thread."""

import asyncio
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import orjson
import structlog
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import close_old_connections
from django.http.request import split_domain_port, validate_host
from rest_framework.exceptions import ParseError

from common.errors import error_body, error_for

log = structlog.get_logger(__name__)

RunSync = Callable[..., Awaitable]


def database_threads(threads: int = 4) -> RunSync:
    """Run database work on dedicated threads, each managing its Django connection the way
    a request would (a broken or expired one is replaced; a pooled one is given back)."""
    executor = ThreadPoolExecutor(threads, thread_name_prefix="gateway-db")

    def with_connection(fn, *args, **kwargs):
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    async def run(fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, functools.partial(with_connection, fn, *args, **kwargs))

    return run


def token_request(scope, path_pattern, *, json_body: bool):
    """(match, headers, token) when this is a token-authenticated POST to the route (with a
    JSON body, when `json_body`); None when Django should answer it instead: session
    logins, other methods, other routes."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    match = path_pattern.match(scope["path"])
    if match is None:
        return None
    headers = dict(scope["headers"])
    authorization = headers.get(b"authorization", b"")
    if not authorization.startswith(b"Token "):
        return None
    if json_body:
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            return None
    return match, headers, authorization[6:].decode("latin-1").strip()


def host_allowed(headers: dict) -> bool:
    """Django's ALLOWED_HOSTS check, which the gateways' requests never reach Django for."""
    domain, _ = split_domain_port(headers.get(b"host", b"").decode("latin-1"))
    allowed = settings.ALLOWED_HOSTS or ([".localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
    return bool(domain) and validate_host(domain, allowed)


async def respond_bad_host(send) -> None:
    await respond(send, 400, error_body("bad_host", "The Host header is not allowed."))


async def read_body(receive, headers) -> bytes:
    """The request body, refused as soon as it is known to pass FLYWHEEL_MAX_BODY_BYTES."""
    limit = settings.FLYWHEEL_MAX_BODY_BYTES
    declared = headers.get(b"content-length")
    if declared is not None:
        try:
            declared_length = int(declared)
        except ValueError:
            raise ParseError("Content-Length is not a number.") from None
        if declared_length > limit:
            raise RequestDataTooBig(f"The request body is {declared_length} bytes; the limit is {limit}.")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ParseError("The client went away before sending the whole body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestDataTooBig(f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def error_answer(exc: Exception, **context) -> tuple[int, dict, dict | None]:
    """Status, body and headers for a failed call: the API's answer for an error it knows,
    else a 500 whose cause is logged (called from the `except` block, for the traceback)."""
    error = error_for(exc)
    if error is None:
        log.exception("gateway.failed", **context)
        return 500, error_body("internal", "Something went wrong on our side; it has been logged."), None
    return error.status, error.body, error.headers


async def respond(send, status: int, body: dict | None, headers: dict | None = None) -> None:
    """A JSON response (or, with `body` None, an empty one). It carries nosniff, as Django's
    API answers do; the framing headers Django adds for pages do not apply to JSON."""
    content = b"" if body is None else orjson.dumps(body)
    raw_headers = [(b"content-length", str(len(content)).encode()), (b"x-content-type-options", b"nosniff")]
    if body is not None:
        raw_headers.append((b"content-type", b"application/json"))
    raw_headers += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": content})
