"""The ingestion gateway: an ASGI layer in front of Django that answers token-authenticated
JSON POSTs to /api/v1/projects/<slug>/predictions/ itself.

Apps that log one prediction per request make this the busiest endpoint by far, and with
Django's request cycle around it most of the cost was the cycle, not the work. Here:

- the request is read, authenticated and validated on the event loop, with the same
  checks (`PredictionsInputSerializer`), service (`predictions_ingest`) and error body as
  the DRF view `PredictionListApi`, which still serves this path for session logins and
  under WSGI;
- small requests of one project that arrive while one of them is being written wait and
  are then written together, in one transaction (group commit): each request's
  predictions still stand or fall together, and an idle service adds no delay;
- database work runs on a few threads of its own, so the event loop never blocks on it.
"""

import asyncio
import functools
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import orjson
import structlog
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import close_old_connections
from django.http.request import split_domain_port, validate_host
from rest_framework.exceptions import AuthenticationFailed, ParseError, PermissionDenied

from accounts import roles
from accounts.authentication import token_user
from accounts.selectors import project_get_for_user, user_role
from accounts.signals import register_access_cache
from common.errors import error_body, error_for
from common.json import loads_request
from common.ttlcache import TTLCache
from flywheel.apis import ingest_metrics_record, ingest_result_body
from flywheel.serializers import PredictionsInputSerializer
from flywheel.services import IngestResult, predictions_ingest

log = structlog.get_logger(__name__)

ROUTE = re.compile(r"^/api/v1/projects/(?P<slug>[-a-zA-Z0-9_]+)/predictions/$")
# Requests up to this many predictions are grouped; larger ones are a batch already.
GROUP_MAX_REQUEST = 100
GROUP_MAX_PREDICTIONS = 2_000
# Bodies larger than this are parsed and validated off the event loop.
LARGE_BODY_BYTES = 256 * 1024

RunSync = Callable[..., Awaitable]


def database_threads(threads: int = 4) -> RunSync:
    """Run database work on dedicated threads, each managing its Django connection the way
    a request would (a broken or expired one is replaced; a pooled one is given back)."""
    executor = ThreadPoolExecutor(threads, thread_name_prefix="ingest-db")

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


@dataclass(eq=False)
class _Waiting:
    items: list
    future: asyncio.Future


class IngestGateway:
    def __init__(self, app, *, run_sync: RunSync | None = None):
        self.app = app
        self.run_sync = run_sync or database_threads()
        self.access = register_access_cache(TTLCache(settings.FLYWHEEL_ACCESS_CACHE_SECONDS))
        self._waiting: dict[int, list[_Waiting]] = {}
        self._writers: dict[int, asyncio.Task] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        match = ROUTE.match(scope["path"])
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"")
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if match is None or not authorization.startswith(b"Token ") or content_type != b"application/json":
            return await self.app(scope, receive, send)
        if not self._host_allowed(headers.get(b"host", b"")):
            return await _respond(send, 400, error_body("bad_host", "The Host header is not allowed."))
        status, body, extra = await self._handle(
            receive, headers, match["slug"], authorization[6:].decode("latin-1").strip()
        )
        await _respond(send, status, body, extra)

    @staticmethod
    def _host_allowed(host: bytes) -> bool:
        domain, _ = split_domain_port(host.decode("latin-1"))
        allowed = settings.ALLOWED_HOSTS or ([".localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
        return bool(domain) and validate_host(domain, allowed)

    async def _handle(self, receive, headers, slug: str, token: str) -> tuple[int, dict, dict]:
        started = time.perf_counter()
        try:
            raw = await _read_body(receive, headers)
            user, project = await self._resolve(token, slug)
            if len(raw) > LARGE_BODY_BYTES:
                loop = asyncio.get_running_loop()
                items, batch = await loop.run_in_executor(None, _parse, project, raw)
            else:
                items, batch = _parse(project, raw)
            result = await self._ingest(project, items, batch)
        except Exception as exc:
            error = error_for(exc)
            if error is None:
                log.exception("gateway.failed", project=slug)
                return 500, error_body("internal", "Something went wrong on our side; it has been logged."), {}
            return error.status, error.body, error.headers
        ingest_metrics_record(project=project, result=result, batch=batch, size=len(items), started=started)
        return 201, ingest_result_body(result), {}

    async def _resolve(self, token: str, slug: str):
        """The user and project of a request, from the access cache or the database."""
        cached = self.access.get((token, slug))
        if cached is None:
            cached = await self.run_sync(_resolve_sync, token, slug)
            self.access.set((token, slug), cached)
        return cached

    async def _ingest(self, project, items, batch: bool) -> IngestResult:
        # A project whose feature schema is still to be inferred is written alone: inference
        # may refuse one request's values, which must not fail the others.
        if len(items) > GROUP_MAX_REQUEST or not project.features:
            return await self.run_sync(predictions_ingest, project=project, items=items, batch=batch)
        waiting = _Waiting(items, asyncio.get_running_loop().create_future())
        self._waiting.setdefault(project.pk, []).append(waiting)
        if project.pk not in self._writers:
            self._writers[project.pk] = asyncio.create_task(self._write_groups(project))
        return await waiting.future

    async def _write_groups(self, project) -> None:
        """Write what has queued up for a project, group by group, until nothing waits."""
        try:
            while self._waiting.get(project.pk):
                queue = self._waiting[project.pk]
                group, size = [], 0
                while queue and (not group or size + len(queue[0].items) <= GROUP_MAX_PREDICTIONS):
                    waiting = queue.pop(0)
                    group.append(waiting)
                    size += len(waiting.items)
                try:
                    combined = await self.run_sync(
                        predictions_ingest, project=project, items=[i for w in group for i in w.items], batch=True
                    )
                except Exception as exc:  # noqa: BLE001 - every request of the group gets the failure
                    for waiting in group:
                        if not waiting.future.done():
                            waiting.future.set_exception(exc)
                    continue
                for waiting, part in zip(group, combined.split([len(w.items) for w in group]), strict=True):
                    if not waiting.future.done():
                        waiting.future.set_result(part)
        finally:
            del self._writers[project.pk]
            # Only left over when this writer was stopped early (shutdown): do not strand them.
            for waiting in self._waiting.pop(project.pk, []):
                if not waiting.future.done():
                    waiting.future.set_exception(RuntimeError("The ingestion writer stopped."))


def _resolve_sync(token: str, slug: str):
    user = token_user(token)
    if user is None:
        raise AuthenticationFailed("Invalid or revoked token, or an inactive user.")
    if user_role(user) not in roles.INGEST:
        raise PermissionDenied("Your role may not do this.")
    return user, project_get_for_user(user=user, slug=slug)


def _parse(project, raw: bytes):
    data = loads_request(raw) if raw else {}
    serializer = PredictionsInputSerializer(project=project, data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


async def _read_body(receive, headers) -> bytes:
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


async def _respond(send, status: int, body: dict, headers: dict | None = None) -> None:
    content = orjson.dumps(body)
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode()),
                   (b"x-content-type-options", b"nosniff")]
    raw_headers += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": content})
