"""The HTTP client: one connection per thread, JSON in and out, retries that never repeat a
request the server may have acted on unless repeating it is harmless."""

import http.client
import json
import random
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from flywheel_client.errors import FlywheelError

try:  # faster when the app has it; the standard library otherwise
    import orjson

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    _loads = orjson.loads
except ImportError:  # pragma: no cover - exercised where orjson is absent
    def _dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    _loads = json.loads

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_BATCH = 10_000


@dataclass
class IngestSummary:
    """What logging a set of predictions did, over all the requests it took."""

    created: int = 0
    duplicates: int = 0
    results: list[dict] = field(default_factory=list)

    @property
    def routed(self) -> list[dict]:
        return [r for r in self.results if r["routed"]]


class Client:
    """A Flywheel service at `url`, as the user whose API `token` is given.

    >>> client = Client("http://127.0.0.1:8000", token)
    >>> client.log_predictions("digits", [{"model_version": "v3", "label": "7", "confidence": 0.41}])

    Connection errors and 429/502/503/504 answers are retried with exponential backoff and
    jitter (`max_retries`, `backoff`, `max_backoff`); a 4xx answer never is, and raises
    FlywheelError with the server's code, message and per-field reasons. A request that may
    have reached the server is repeated only where repeating is harmless: reads, and logging
    predictions and feedback, which carry ids the server deduplicates on.
    """

    def __init__(self, url: str, token: str, *, timeout: float = 60.0, max_retries: int = 5,
                 backoff: float = 0.25, max_backoff: float = 8.0):
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Not an http(s) URL: {url!r}")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.base_path = parts.path
        self.token = token
        self.timeout, self.max_retries = timeout, max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self._local = threading.local()

    # --- The wire ---------------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            connection = cls(self.host, self.port, timeout=self.timeout)
            self._local.connection = connection
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def close(self) -> None:
        self._drop_connection()

    def _sleep_before_retry(self, attempt: int, retry_after: str | None) -> None:
        delay = min(self.max_backoff, self.backoff * 2 ** attempt) * (0.5 + random.random() / 2)
        if retry_after and retry_after.isdigit():
            delay = max(delay, min(self.max_backoff, float(retry_after)))
        time.sleep(delay)

    def request(self, method: str, path: str, body: Any = None, *, params: Mapping | None = None,
                idempotent: bool | None = None, raw: bool = False) -> Any:
        """Send one API request and return its decoded body (None for 204; bytes when `raw`).
        `idempotent` says whether the request may be repeated after it might have reached
        the server; it defaults to true for GET."""
        if idempotent is None:
            idempotent = method in ("GET", "HEAD")
        target = self.base_path + path + (f"?{urlencode(params)}" if params else "")
        payload = None if body is None else _dumps(body)
        headers = {"Authorization": f"Token {self.token}", "Accept": "application/json",
                   "User-Agent": "flywheel-client/1"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            sent = False
            reused = getattr(self._local, "connection", None) is not None
            try:
                connection = self._connection()
                connection.request(method, target, body=payload, headers=headers)
                sent = True
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                # A kept-alive connection the server had already closed fails at once, before
                # the server read the request: a fresh one is safe whatever the request.
                stale = reused and isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError |
                                              BrokenPipeError)
                # Not sent at all: always safe to try again. Sent, no answer: only if harmless.
                if attempt < self.max_retries and (not sent or idempotent or stale):
                    self._sleep_before_retry(attempt, None)
                    attempt += 1
                    continue
                raise FlywheelError(0, "connection_failed", f"{method} {path}: {type(exc).__name__}: {exc}") from exc
            if response.getheader("Connection", "").lower() == "close":
                self._drop_connection()
            if response.status in RETRY_STATUSES and attempt < self.max_retries:
                # The server did not act on it (overloaded or unavailable): try again later.
                self._sleep_before_retry(attempt, response.getheader("Retry-After"))
                attempt += 1
                continue
            if response.status >= 400:
                raise FlywheelError.from_response(response.status, data)
            if response.status == 204:
                return None
            if raw:
                return data, {name.lower(): value for name, value in response.getheaders()}
            return _loads(data) if data else None

    # --- Apps ---------------------------------------------------------------------------------------

    def log_predictions(self, project: str, predictions: Iterable[Mapping], *,
                        batch_size: int = 1_000) -> IngestSummary:
        """Log predictions in batches (at most 10,000 each). A prediction without an `id` gets
        one here, so a batch retried after a lost answer creates nothing twice."""
        if not 0 < batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be 1 to {MAX_BATCH}")
        summary = IngestSummary()
        for batch in _chunks(predictions, batch_size):
            body = {"predictions": [{"id": uuid.uuid4().hex, **p} if "id" not in p else dict(p) for p in batch]}
            answer = self.request("POST", f"/api/v1/projects/{_slug(project)}/predictions/", body, idempotent=True)
            summary.created += answer["created"]
            summary.duplicates += answer["duplicates"]
            summary.results.extend(answer["results"])
        return summary

    def log_prediction(self, project: str, **prediction: Any) -> dict:
        """Log one prediction; returns its routing result ({"id", "routed", "reason", "task_id", ...})."""
        prediction.setdefault("id", uuid.uuid4().hex)
        answer = self.request("POST", f"/api/v1/projects/{_slug(project)}/predictions/", prediction, idempotent=True)
        return answer["results"][0]

    def prediction(self, project: str, prediction_id: str) -> dict:
        return self.request("GET", f"/api/v1/projects/{_slug(project)}/predictions/{quote(prediction_id, safe='')}/")

    def feedback(self, project: str, items: Iterable[Mapping], *, batch_size: int = 1_000) -> dict:
        """Report what end users did: {"prediction_id", "kind": confirm|correct|reject,
        "label"?, "user"?}. Items get ids here, so a retry records nothing twice."""
        totals = {"created": 0, "duplicates": 0, "resolved": 0, "routed": {}}
        for batch in _chunks(items, batch_size):
            body = {"feedback": [{"id": uuid.uuid4().hex, **i} if "id" not in i else dict(i) for i in batch]}
            answer = self.request("POST", f"/api/v1/projects/{_slug(project)}/feedback/", body, idempotent=True)
            for key in ("created", "duplicates", "resolved"):
                totals[key] += answer[key]
            for reason, n in answer["routed"].items():
                totals["routed"][reason] = totals["routed"].get(reason, 0) + n
        return totals

    def log_shadow_predictions(self, project: str, items: Iterable[Mapping], *, batch_size: int = 1_000) -> dict:
        """Log a challenger's answers for served predictions: {"prediction_id",
        "model_version", "label", "confidence" or "probabilities"}. Idempotent on
        (prediction_id, model_version), so a retried batch records nothing twice. Returns
        the totals and every result ({"prediction_id", "agrees", "routed", "reason",
        "task_id", "duplicate"})."""
        if not 0 < batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be 1 to {MAX_BATCH}")
        totals: dict = {"created": 0, "duplicates": 0, "results": []}
        for batch in _chunks(items, batch_size):
            answer = self.request("POST", f"/api/v1/projects/{_slug(project)}/shadow-predictions/",
                                  {"shadow_predictions": [dict(i) for i in batch]}, idempotent=True)
            totals["created"] += answer["created"]
            totals["duplicates"] += answer["duplicates"]
            totals["results"].extend(answer["results"])
        return totals

    # --- Annotators and reviewers ----------------------------------------------------------------------

    def next_task(self, project: str) -> dict | None:
        """Claim the most important open task (None when there is nothing to do)."""
        answer = self.request("POST", f"/api/v1/projects/{_slug(project)}/tasks/next/")
        return None if answer is None else answer["task"]

    def heartbeat(self, task_id: int) -> dict:
        return self.request("POST", f"/api/v1/tasks/{int(task_id)}/heartbeat/")

    def annotate(self, task_id: int, label: str, *, lead_time_s: float | None = None) -> dict:
        body = {"label": label} if lead_time_s is None else {"label": label, "lead_time_s": lead_time_s}
        return self.request("POST", f"/api/v1/tasks/{int(task_id)}/annotations/", body)

    def skip(self, task_id: int) -> dict:
        return self.request("POST", f"/api/v1/tasks/{int(task_id)}/skip/")

    def release(self, task_id: int) -> dict:
        return self.request("POST", f"/api/v1/tasks/{int(task_id)}/release/")

    def undo(self, task_id: int) -> dict:
        return self.request("POST", f"/api/v1/tasks/{int(task_id)}/undo/")["task"]

    def review(self, task_id: int, verdict: str, label: str | None = None) -> dict:
        body = {"verdict": verdict} if label is None else {"verdict": verdict, "label": label}
        return self.request("POST", f"/api/v1/tasks/{int(task_id)}/review/", body)

    def tasks(self, project: str, *, status: str | None = None, reason: str | None = None,
              limit: int = 100, offset: int = 0) -> dict:
        params = {k: v for k, v in {"status": status, "reason": reason, "limit": limit, "offset": offset}.items()
                  if v is not None}
        return self.request("GET", f"/api/v1/projects/{_slug(project)}/tasks/", params=params)

    def similar_tasks(self, task_id: int, *, k: int = 20) -> list[dict]:
        """The open tasks most similar to one, nearest first: [{"task_id", "distance", "prediction"}]."""
        return self.request("GET", f"/api/v1/tasks/{int(task_id)}/similar/", params={"k": k})["results"]

    # --- Groups ---------------------------------------------------------------------------------------

    def build_groups(self, project: str) -> dict:
        """Regroup the open tasks now (reviewer, ops): {"groups", "grouped_tasks", "ungrouped_tasks"}."""
        return self.request("POST", f"/api/v1/projects/{_slug(project)}/groups/build/")

    def groups(self, project: str, *, status: str | None = None, limit: int = 100, offset: int = 0) -> dict:
        params = {k: v for k, v in {"status": status, "limit": limit, "offset": offset}.items() if v is not None}
        return self.request("GET", f"/api/v1/projects/{_slug(project)}/groups/", params=params)

    def next_group(self, project: str) -> dict | None:
        """Claim the most valuable open group (None when there is none)."""
        answer = self.request("POST", f"/api/v1/projects/{_slug(project)}/groups/next/")
        return None if answer is None else answer["group"]

    def group_heartbeat(self, group_id: int) -> dict:
        return self.request("POST", f"/api/v1/groups/{int(group_id)}/heartbeat/")

    def release_group(self, group_id: int) -> dict:
        return self.request("POST", f"/api/v1/groups/{int(group_id)}/release/")

    def annotate_group(self, group_id: int, label: str, *, exclude: Iterable[int] = (),
                       lead_time_s: float | None = None) -> dict:
        """Label a held group; excluded members go back to the queue: {"labeled", "returned"}."""
        body: dict[str, Any] = {"label": label, "exclude": [int(t) for t in exclude]}
        if lead_time_s is not None:
            body["lead_time_s"] = lead_time_s
        return self.request("POST", f"/api/v1/groups/{int(group_id)}/annotations/", body)

    def split_group(self, group_id: int) -> list[dict]:
        return self.request("POST", f"/api/v1/groups/{int(group_id)}/split/")["groups"]

    def merge_groups(self, group_id: int, other_id: int) -> dict:
        return self.request("POST", f"/api/v1/groups/{int(group_id)}/merge/", {"with": int(other_id)})["group"]

    # --- Ops ------------------------------------------------------------------------------------------

    def projects(self) -> list[dict]:
        return self.request("GET", "/api/v1/projects/")

    def create_project(self, **project: Any) -> dict:
        return self.request("POST", "/api/v1/projects/", project)

    def project(self, slug: str) -> dict:
        return self.request("GET", f"/api/v1/projects/{_slug(slug)}/")

    def update_project(self, slug: str, **changes: Any) -> dict:
        return self.request("PATCH", f"/api/v1/projects/{_slug(slug)}/", changes)

    def mark_gold(self, project: str, prediction_id: str, label: str) -> dict:
        body = {"prediction_id": prediction_id, "label": label}
        return self.request("POST", f"/api/v1/projects/{_slug(project)}/gold/", body, idempotent=True)

    def stats(self, project: str) -> dict:
        return self.request("GET", f"/api/v1/projects/{_slug(project)}/stats/")

    def drift_check(self, project: str, *, start: str | None = None, end: str | None = None) -> dict:
        body = {k: v for k, v in {"start": start, "end": end}.items() if v is not None}
        return self.request("POST", f"/api/v1/projects/{_slug(project)}/drift/checks/", body)

    def drift_reports(self, project: str, *, limit: int = 20) -> list[dict]:
        return self.request("GET", f"/api/v1/projects/{_slug(project)}/drift/reports/", params={"limit": limit})

    def set_drift_reference(self, project: str, **reference: Any) -> dict:
        return self.request("PUT", f"/api/v1/projects/{_slug(project)}/drift/reference/", reference, idempotent=True)

    def create_dataset(self, project: str, note: str = "") -> dict:
        return self.request("POST", f"/api/v1/projects/{_slug(project)}/datasets/", {"note": note})

    def dataset(self, project: str, version: int) -> dict:
        return self.request("GET", f"/api/v1/projects/{_slug(project)}/datasets/{int(version)}/")

    def datasets(self, project: str) -> list[dict]:
        return self.request("GET", f"/api/v1/projects/{_slug(project)}/datasets/")

    def train(self, project: str, *, dataset_version: int | None = None) -> dict:
        """Start (or join) a training run; returns it as it stands: its `id` (what
        training_run() and wait_for_training_run() take) and its `number` within the
        project (its candidate model is named run-<number>)."""
        body = {} if dataset_version is None else {"dataset_version": dataset_version}
        return self.request("POST", f"/api/v1/projects/{_slug(project)}/training-runs/", body)

    def training_run(self, project: str, run_id: int) -> dict:
        """A run by its id (the `id` train() returned, not its per-project `number`)."""
        return self.request("GET", f"/api/v1/projects/{_slug(project)}/training-runs/{int(run_id)}/")

    def wait_for_training_run(self, project: str, run_id: int, *, timeout: float = 600.0,
                              interval: float = 0.5) -> dict:
        """Poll a run until it succeeds or fails; FlywheelError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.training_run(project, run_id)
            if run["status"] in ("succeeded", "failed"):
                return run
            if time.monotonic() > deadline:
                raise FlywheelError(0, "timeout", f"Training run {run_id} still {run['status']} after {timeout} s.")
            time.sleep(interval)

    def models(self, project: str) -> list[dict]:
        return self.request("GET", f"/api/v1/projects/{_slug(project)}/models/")

    def champion(self, project: str) -> dict | None:
        return next((m for m in self.models(project) if "champion" in m["aliases"]), None)

    def model_artifact(self, project: str, name: str) -> tuple[bytes, str]:
        """A trained model's artifact and its SHA-256 (check it before loading)."""
        content, headers = self.request(
            "GET", f"/api/v1/projects/{_slug(project)}/models/{quote(name, safe='')}/artifact/", raw=True)
        return content, headers.get("x-artifact-sha256", "")

    def promote(self, project: str, name: str, *, reason: str = "") -> dict:
        return self.request("POST", f"/api/v1/projects/{_slug(project)}/models/{quote(name, safe='')}/promote/",
                            {"reason": reason})

    def shadow(self, project: str, name: str) -> dict:
        """The champion against model `name` on live traffic, with the live gate's verdict."""
        return self.request("GET", f"/api/v1/projects/{_slug(project)}/models/{quote(name, safe='')}/shadow/")

    def shadow_start(self, project: str, name: str, *, reason: str = "") -> dict:
        """Put a model trained here in shadow: it scores every new prediction beside the champion."""
        return self.request("POST", f"/api/v1/projects/{_slug(project)}/models/{quote(name, safe='')}/shadow/",
                            {"reason": reason})

    def shadow_stop(self, project: str, name: str, *, reason: str = "") -> dict:
        return self.request("DELETE", f"/api/v1/projects/{_slug(project)}/models/{quote(name, safe='')}/shadow/",
                            {"reason": reason})

    def rollback(self, project: str, *, reason: str = "") -> dict:
        return self.request("POST", f"/api/v1/projects/{_slug(project)}/models/rollback/", {"reason": reason})


def _slug(value: str) -> str:
    return quote(str(value), safe="")


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
