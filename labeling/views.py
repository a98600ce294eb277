"""Web pages of the annotator and reviewer workspaces (/label/, /review/)."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_http_methods

from accounts import roles
from accounts.selectors import project_get_for_user, projects_for_user, user_role
from common.errors import DomainError
from labeling import selectors, services
from labeling.serializers import ReviewInputSerializer

RESERVED_KEYS = frozenset({"s", "u"})  # /label/: skip, undo
REVIEW_KEYS = frozenset({"r"})  # /review/: reject (with a reason)
# The group workspace also splits with x (and moves between members with j and k).
GROUP_RESERVED_KEYS = frozenset({"u", "x", "j", "k"})


def label_keys(labels: list[str], reserved: frozenset[str] = RESERVED_KEYS) -> list[tuple[str, str | None]]:
    """(label, key) pairs. Labels that are single characters are their own keys (the digit
    7 for the label "7"); otherwise keys are given in order: 1-9, 0, then letters, leaving
    out the page's command keys."""
    if all(len(label) == 1 for label in labels) and len({label.lower() for label in labels}) == len(labels) \
            and not reserved & {label.lower() for label in labels}:
        return [(label, label.lower()) for label in labels]
    positional = [*"1234567890", *(c for c in "abcdefghijklmnopqrstuvwxyz" if c not in reserved)]
    return [(label, positional[i] if i < len(positional) else None) for i, label in enumerate(labels)]


def _require(request, allowed: frozenset[str]) -> None:
    if user_role(request.user) not in allowed:
        raise PermissionDenied("Your role may not use this page.")


def _project(request, slug):
    try:
        return project_get_for_user(user=request.user, slug=slug)
    except DomainError:
        raise Http404("No such project.") from None


@login_required
def label_home(request):
    _require(request, roles.ANNOTATE)
    projects = list(projects_for_user(request.user).order_by("slug"))
    if len(projects) == 1:
        return redirect("label-workspace", slug=projects[0].slug)
    return render(request, "labeling/projects.html", {"projects": projects, "area": "label"})


@login_required
@ensure_csrf_cookie
def label_workspace(request, slug):
    _require(request, roles.ANNOTATE)
    project = _project(request, slug)
    keys = label_keys(project.labels)
    config = {
        "keys": {key: label for label, key in keys if key},
        "next": reverse("task-next", args=[project.slug]),
        "me": reverse("annotator-me", args=[project.slug]),
        "heartbeat_seconds": max(5, min(60, settings.FLYWHEEL_LEASE_SECONDS // 3)),
    }
    return render(request, "labeling/workspace.html", {
        "project": project, "keys": keys, "area": "label", "config": config,
        "summary": selectors.annotator_summary(project_id=project.pk, user=request.user),
    })


@login_required
def group_home(request):
    _require(request, roles.ANNOTATE)
    projects = list(projects_for_user(request.user).order_by("slug"))
    if len(projects) == 1:
        return redirect("label-groups", slug=projects[0].slug)
    return render(request, "labeling/projects.html", {"projects": projects, "area": "groups"})


@login_required
@ensure_csrf_cookie
def group_workspace(request, slug):
    """Label a group at once: its members as a grid, keyboard first (labeling/static/groups.js)."""
    _require(request, roles.ANNOTATE)
    project = _project(request, slug)
    keys = label_keys(project.labels, GROUP_RESERVED_KEYS)
    config = {
        "keys": {key: label for label, key in keys if key},
        "next": reverse("group-next", args=[project.slug]),
        "heartbeat_seconds": max(5, min(60, settings.FLYWHEEL_LEASE_SECONDS // 3)),
    }
    return render(request, "labeling/groups.html", {"project": project, "keys": keys, "area": "label",
                                                    "config": config})


@login_required
def review_home(request):
    _require(request, roles.REVIEW)
    projects = list(projects_for_user(request.user).order_by("slug"))
    if len(projects) == 1:
        return redirect("review-list", slug=projects[0].slug)
    return render(request, "labeling/projects.html", {"projects": projects, "area": "review"})


@login_required
@require_http_methods(["GET", "POST"])
def review_list(request, slug):
    _require(request, roles.REVIEW)
    project = _project(request, slug)
    if request.method == "POST":
        task_id = request.POST.get("task") or ""
        # The API's own input serializer: the page and the API accept the same reviews.
        review = ReviewInputSerializer(data={key: request.POST[key] for key in ("verdict", "label", "reason")
                                             if request.POST.get(key)})
        if not task_id.isdigit() or not review.is_valid():
            messages.error(request, "That review was not understood.")
        else:
            verdict = review.validated_data["verdict"]
            try:
                services.task_review(task_id=int(task_id), reviewer=request.user, verdict=verdict,
                                     label=review.validated_data.get("label"),
                                     reason=review.validated_data["reason"])
                messages.success(request, f"Task {task_id}: {'accepted' if verdict == 'accept' else 'sent back'}.")
            except DomainError as exc:
                messages.error(request, f"Task {task_id}: {exc.message}")
        return redirect("review-list", slug=slug)
    tasks = selectors.tasks_for_review(project_id=project.pk)
    for task in tasks:
        votes = {}
        for annotation in task.round_annotations:
            votes[annotation.label] = votes.get(annotation.label, 0) + 1
        task.votes = sorted(votes.items(), key=lambda item: -item[1])
    keys = label_keys(project.labels, reserved=REVIEW_KEYS)
    return render(request, "labeling/review.html", {
        "project": project, "tasks": tasks, "area": "review", "keys": keys,
        "config": {"keys": {key: label for label, key in keys if key}},
        "queue": selectors.queue_depth(project_id=project.pk),
    })
