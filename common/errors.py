"""One exception type for domain errors, and the one handler that turns every API error
into the body docs/api.md promises: {"error": {"code", "message", "fields"?}}."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

from common.storage import StorageError

log = structlog.get_logger(__name__)


class DomainError(Exception):
    """A request the domain refuses: carries the status, a machine code and a sentence."""

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, code: str, message: str, *, status_code: int | None = None,
                 fields: dict[str, list[str]] | None = None, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields
        self.details = details
        if status_code is not None:
            self.status_code = status_code


class Conflict(DomainError):
    status_code = status.HTTP_409_CONFLICT


class NotFound(DomainError):
    status_code = status.HTTP_404_NOT_FOUND


class Gone(DomainError):
    """What was asked for existed and was removed on purpose; `details` says where it went."""

    status_code = status.HTTP_410_GONE


def error_body(code: str, message: str, fields: dict[str, list[str]] | None = None,
               details: dict | None = None) -> dict:
    body: dict = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    if details:
        body["details"] = details
    return {"error": body}


def flatten_fields(detail, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail as {"predictions[3].confidence": ["reason", ...]}."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, Mapping):
        for key, value in detail.items():
            if key in ("non_field_errors", "__all__"):
                path = prefix or "body"
            elif isinstance(key, int):
                path = f"{prefix}[{key}]"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            for sub_path, reasons in flatten_fields(value, path).items():
                out.setdefault(sub_path, []).extend(reasons)
    elif isinstance(detail, Sequence) and not isinstance(detail, str):
        if all(isinstance(item, str) for item in detail):
            out.setdefault(prefix or "body", []).extend(str(item) for item in detail)
        else:
            for index, item in enumerate(detail):
                if item:
                    for sub_path, reasons in flatten_fields(item, f"{prefix}[{index}]").items():
                        out.setdefault(sub_path, []).extend(reasons)
    else:
        out.setdefault(prefix or "body", []).append(str(detail))
    return out


def validation_message(fields: dict[str, list[str]]) -> str:
    path, reasons = next(iter(fields.items()))
    more = f" (and {len(fields) - 1} more)" if len(fields) > 1 else ""
    return f"Invalid {path}: {reasons[0]}{more}"


_DRF_CODES = {
    exceptions.ParseError: "malformed_body",
    exceptions.AuthenticationFailed: "not_authenticated",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
}


@dataclass(frozen=True)
class ErrorResponse:
    status: int
    body: dict
    headers: dict[str, str]


def error_for(exc: BaseException) -> ErrorResponse | None:
    """The API's answer to an exception, or None for a bug (which Django logs as a 500)."""
    if isinstance(exc, DomainError):
        return ErrorResponse(exc.status_code, error_body(exc.code, exc.message, exc.fields, exc.details), {})
    if isinstance(exc, exceptions.ValidationError):
        fields = flatten_fields(exc.detail)
        return ErrorResponse(400, error_body("invalid", validation_message(fields), fields), {})
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        return ErrorResponse(413, error_body("body_too_large", str(exc)), {})
    elif isinstance(exc, StorageError):
        # Object storage is away or refused: like the database, an outage, not a bug.
        log.warning("api.storage_unavailable", error=str(exc)[:200])
        return ErrorResponse(503, error_body("storage_unavailable", "Object storage is unavailable; retry shortly."),
                             {"Retry-After": "5"})
    elif isinstance(exc, OperationalError | InterfaceError):
        # The database is away: tell the client to retry rather than report a bug.
        log.warning("api.database_unavailable", error=str(exc)[:200])
        return ErrorResponse(503, error_body("unavailable", "The database is unavailable; retry shortly."),
                             {"Retry-After": "1"})
    if not isinstance(exc, exceptions.APIException):
        return None
    headers = {}
    # A subclass may name a finer code (an expired token, a key's scope) than its family's.
    code = getattr(exc, "api_code", None) or next(
        (c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    status_code = exc.status_code
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        status_code = 401
        headers["WWW-Authenticate"] = getattr(exc, "auth_header", None) or "Token"
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return ErrorResponse(status_code, error_body(code, str(message)), headers)


def api_exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every API error leaves in the same shape."""
    error = error_for(exc)
    if error is None:
        return None
    return Response(error.body, status=error.status, headers=error.headers)


def json_error_response(code: str, message: str, status_code: int) -> JsonResponse:
    """For the paths outside DRF (middleware, URL resolver) that must answer like the API."""
    return JsonResponse(error_body(code, message), status=status_code)
