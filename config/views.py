"""Service endpoints: liveness, readiness, Prometheus metrics, and JSON error pages."""

import hmac

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET

from accounts.models import Role
from accounts.selectors import user_role
from common.errors import json_error_response
from common.storage import StorageError, get_storage
from monitoring import metrics


def home(request):
    """Send people to the page of their role."""
    if not request.user.is_authenticated:
        return redirect("login")
    role = user_role(request.user)
    if role in (Role.OPS, Role.ADMIN):
        return redirect("/ops/")
    if role == Role.REVIEWER:
        return redirect("review-home")
    return redirect("label-home")


@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def _check_broker() -> str:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return "ok (tasks run eagerly)"
    from config.celery import app

    with app.connection_for_write(settings.CELERY_BROKER_URL) as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return "ok"


def _check_storage() -> str:
    get_storage().check()
    return "ok"


@require_GET
def readyz(request):
    checks, ready = {}, True
    for name, check in (("database", _check_database), ("broker", _check_broker), ("storage", _check_storage)):
        try:
            checks[name] = check()
        except (StorageError, OSError, Exception) as exc:  # noqa: BLE001 - any failure means not ready
            checks[name] = f"unavailable: {type(exc).__name__}: {str(exc)[:200]}"
            ready = False
    return JsonResponse({"status": "ready" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


@require_GET
def metrics_view(request):
    token = settings.METRICS_TOKEN
    if token:
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(sent.encode(), token.encode()):
            return json_error_response("not_authenticated", "Send the metrics token as a Bearer token.", 401)
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)


def not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return json_error_response("not_found", f"No such endpoint: {request.path}", 404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def server_error(request):
    if request.path.startswith("/api/"):
        return json_error_response("internal", "Something went wrong on our side; it has been logged.", 500)
    from django.views.defaults import server_error as default

    return default(request)
