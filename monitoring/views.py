"""The ops dashboard (/ops/): drift and the flywheel at a glance, per project. Session
login; ops and admins only."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render

from accounts import roles
from accounts.selectors import project_get_for_user, projects_for_user, user_role
from common.errors import NotFound
from monitoring import dashboard


def _observer_only(request) -> None:
    if user_role(request.user) not in roles.OBSERVE:
        raise PermissionDenied("The ops dashboard is for ops and admins.")


@login_required
def ops_home(request):
    _observer_only(request)
    first = projects_for_user(request.user).order_by("slug").values_list("slug", flat=True).first()
    if first is not None:
        return redirect("ops-project", slug=first)
    return render(request, "monitoring/ops.html", {"projects": [], "project": None})


@login_required
def ops_project(request, slug):
    _observer_only(request)
    try:
        project = project_get_for_user(user=request.user, slug=slug)
    except NotFound:
        raise Http404(f"No project '{slug}'.") from None
    data = dashboard.project_dashboard(project)
    charts = {
        "over_time": data["over_time"],
        "drifted": data["drifted"],
        "predictions": data["predictions"],
        "panels": [{"key": p["key"], "kind": p["kind"], "chart": p["data"].get("chart")} for p in data["panels"]],
    }
    return render(request, "monitoring/ops.html", {
        "project": project,
        "projects": list(projects_for_user(request.user).order_by("slug").values_list("slug", "name")),
        "charts": charts,
        **data,
    })
