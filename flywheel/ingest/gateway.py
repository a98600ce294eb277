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
import re
import time
from dataclasses import dataclass

from django.conf import settings

from accounts import roles
from accounts.authentication import token_in_force, token_project_access
from accounts.signals import register_access_cache
from common.gateway import (
    RunSync,
    database_threads,
    error_answer,
    host_allowed,
    read_body,
    respond,
    respond_bad_host,
    token_request,
)
from common.json import loads_request
from common.ttlcache import TTLCache
from flywheel.ingest.serializers import PredictionsInputSerializer
from flywheel.ingest.services import IngestResult, ingest_metrics_record, predictions_ingest

ROUTE = re.compile(r"^/api/v1/projects/(?P<slug>[-a-zA-Z0-9_]+)/predictions/$")
# Requests up to this many predictions are grouped; larger ones are a batch already.
GROUP_MAX_REQUEST = 100
GROUP_MAX_PREDICTIONS = 2_000
# Bodies larger than this are parsed and validated off the event loop.
LARGE_BODY_BYTES = 256 * 1024

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
        request = token_request(scope, ROUTE, json_body=True)
        if request is None:
            return await self.app(scope, receive, send)
        match, headers, token = request
        if not host_allowed(headers):
            return await respond_bad_host(send)
        status, body, extra = await self._handle(receive, headers, match["slug"], token)
        await respond(send, status, body, extra)

    async def _handle(self, receive, headers, slug: str, token: str) -> tuple[int, dict, dict]:
        started = time.perf_counter()
        try:
            raw = await read_body(receive, headers)
            user, project = await self._resolve(token, slug)
            if len(raw) > LARGE_BODY_BYTES:
                loop = asyncio.get_running_loop()
                items, batch = await loop.run_in_executor(None, _parse, project, raw)
            else:
                items, batch = _parse(project, raw)
            result = await self._ingest(project, items, batch)
        except Exception as exc:  # noqa: BLE001 - error_answer logs any error the API does not know
            return error_answer(exc, project=slug)
        ingest_metrics_record(project=project, result=result, batch=batch, size=len(items), started=started)
        return 201, result.as_body(), {}

    async def _resolve(self, token: str, slug: str):
        """The user and project of a request, from the access cache or the database."""
        cached = self.access.get((token, slug))
        if cached is None:
            cached = await self.run_sync(token_project_access, token=token, slug=slug, allowed_roles=roles.INGEST,
                                         method="POST", ingest=True)
            self.access.set((token, slug), cached)
        else:
            token_in_force(cached[0])  # a cached key still expires on time and is still noted as used
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


def _parse(project, raw: bytes):
    data = loads_request(raw) if raw else {}
    serializer = PredictionsInputSerializer(project=project, data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
