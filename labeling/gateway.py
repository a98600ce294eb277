"""The annotator gateway: an ASGI layer in front of Django that answers the two calls an
annotator makes per task, when they come with an API token:

- POST /api/v1/projects/<slug>/tasks/next/ (claim the next task);
- POST /api/v1/tasks/<id>/annotations/ (label it, JSON body).

Claiming is what an annotator waits on between two tasks. Under ASGI, Django runs a
worker's sync views one after another on a single thread, so a claim that arrived just
after an annotation waited for it, and then for Django's request cycle. Here both calls
run on the gateways' database threads with the same access checks, answers
(`claim_answer`, `annotation_answer`, shared with the DRF views) and error bodies as the
views `TaskNextApi` and `AnnotationCreateApi`, which still serve these paths for session
logins (the web workspace) and under WSGI.
"""

import re

from accounts import roles
from accounts.authentication import token_user_with_role
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
from labeling.answers import annotation_answer, claim_answer

CLAIM = re.compile(r"^/api/v1/projects/(?P<slug>[-a-zA-Z0-9_]+)/tasks/next/$")
ANNOTATE = re.compile(r"^/api/v1/tasks/(?P<task_id>[0-9]+)/annotations/$")


def _claim(*, token: str, slug: str, raw: bytes) -> tuple[int, dict | None]:
    user = token_user_with_role(token=token, allowed_roles=roles.ANNOTATE)
    answer = claim_answer(user=user, slug=slug)
    return (204, None) if answer is None else (200, answer)


def _annotate(*, token: str, task_id: str, raw: bytes) -> tuple[int, dict]:
    user = token_user_with_role(token=token, allowed_roles=roles.ANNOTATE)
    return 201, annotation_answer(user=user, task_id=int(task_id),
                                  read_data=lambda: loads_request(raw) if raw else {})


# (path, whether the body must be JSON, what answers it)
_ROUTES = ((CLAIM, False, _claim), (ANNOTATE, True, _annotate))


def _route(scope):
    for route, json_body, answer in _ROUTES:
        request = token_request(scope, route, json_body=json_body)
        if request is not None:
            return request, answer
    return None


class AnnotatorGateway:
    def __init__(self, app, *, run_sync: RunSync | None = None):
        self.app = app
        self.run_sync = run_sync or database_threads()

    async def __call__(self, scope, receive, send):
        routed = _route(scope)
        if routed is None:
            return await self.app(scope, receive, send)
        (match, headers, token), answer = routed
        if not host_allowed(headers):
            return await respond_bad_host(send)
        try:
            raw = await read_body(receive, headers)
            status, body = await self.run_sync(answer, token=token, raw=raw, **match.groupdict())
        except Exception as exc:  # noqa: BLE001 - error_answer logs any error the API does not know
            return await respond(send, *error_answer(exc, path=scope["path"]))
        await respond(send, status, body)
