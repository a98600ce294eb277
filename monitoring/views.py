"""The ops dashboard (/ops/): drift and the flywheel at a glance, per project; and the
console's drift page (/ops/<slug>/drift/): run a check, set the reference, alerts and their
webhook deliveries. Session login; ops and admins only."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render

from accounts import roles
from accounts.pages import console_project
from accounts.selectors import project_get_for_user, projects_for_user, user_role
from common.errors import DomainError, NotFound
from common.forms import domain_errors, flat_errors, form_input
from monitoring import dashboard, hooks, selectors, services
from monitoring.models import CheckTrigger
from monitoring.policy import DriftPolicy
from monitoring.serializers import (
    AlertSerializer,
    DriftCheckInputSerializer,
    ReferenceInputSerializer,
    ReferenceStateSerializer,
    ReportSerializer,
)


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


# --- The console's drift page ---------------------------------------------------------------------

CHECK_FIELDS = ("start", "end")
REFERENCE_FIELDS = ("start", "end", "dataset_version", "note")


def _drift_page(request, project, *, errors=None, values=None, form=None, status=200):
    return render(request, "monitoring/drift.html", {
        "project": project, "tab": "drift", "form": form, "errors": errors or {}, "values": values or {},
        "reference": ReferenceStateSerializer({"current": selectors.reference_current(project=project),
                                               "history": selectors.reference_history(project=project)}).data,
        "reports": ReportSerializer(selectors.reports_list(project=project, limit=10), many=True).data,
        "alerts": AlertSerializer(selectors.alerts_list(project=project, limit=10), many=True).data,
        "window_hours": DriftPolicy.from_dict(project.drift).window_hours,
    }, status=status)


@login_required
def ops_drift(request, slug):
    """GET: the reference and its history, recent checks, alerts with their webhook
    deliveries. POST form=check: run a check now over a window; form=reference: set the
    reference to a window or a dataset version. Each is the API's serializer and service."""
    project = console_project(request, slug, manage=request.method == "POST")
    if request.method != "POST":
        return _drift_page(request, project)
    form = request.POST.get("form")
    if form == "check":
        values = form_input(request.POST, CHECK_FIELDS)
        serializer = DriftCheckInputSerializer(data=values)
    elif form == "reference":
        kind = request.POST.get("kind", "window")
        values = form_input(request.POST, ("dataset_version", "note") if kind == "dataset_version"
                            else ("start", "end", "note"))
        serializer = ReferenceInputSerializer(data=values)
        values["kind"] = kind
    else:
        messages.error(request, "That form was not understood.")
        return redirect("ops-drift", slug=project.slug)
    if not serializer.is_valid():
        return _drift_page(request, project, errors=flat_errors(serializer.errors), values=values, form=form,
                           status=400)
    data = serializer.validated_data
    try:
        if form == "check":
            report = services.drift_check_run(project=project, start=data.get("start"), end=data.get("end"),
                                              trigger=CheckTrigger.ON_DEMAND, actor=request.user)
            drifted = [f["name"] for f in ReportSerializer(report).data["features"] if f["drifted"]]
            messages.success(request, f"Check #{report.pk}: " + (f"drift in {', '.join(drifted)}." if drifted
                                                                  else "no drift."))
        elif "dataset_version" in data:
            hooks.reference_from_dataset_version(project=project, dataset_version=data["dataset_version"],
                                                 actor=request.user)
            messages.success(request, f"Drift is now measured against dataset version {data['dataset_version']}.")
        else:
            reference = services.reference_set_window(project=project, start=data["start"], end=data["end"],
                                                      actor=request.user, note=data.get("note", ""))
            window = f"{reference.window_start:%Y-%m-%d %H:%M} – {reference.window_end:%Y-%m-%d %H:%M} UTC"
            messages.success(request, f"Drift is now measured against the window {window} "
                                      f"({reference.count} predictions).")
    except DomainError as exc:
        field = "dataset_version" if form == "reference" and "dataset_version" in data else None
        return _drift_page(request, project, errors=domain_errors(exc, field=field), values=values, form=form,
                           status=400)
    return redirect("ops-drift", slug=project.slug)
