"""The console's pages for what flywheel drives: /ops/<slug>/training/ (start a training
run, watch it, read the gate, promote and roll back), /ops/<slug>/datasets/ (versions,
their build, the diff of two, downloads, retry), /ops/projects/new/ and
/ops/<slug>/settings/ (a project and its policies). Thin: each action is the API's
input serializer and the API's service call, so a page and the API accept and refuse the
same things and write the same audit-log events."""

import math
import re

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.pages import console_project, console_role_check
from common.errors import DomainError
from common.forms import domain_errors, flat_errors, form_input, policy_form, policy_input
from common.storage import StorageError
from flywheel import projects as project_services
from flywheel.datasets import selectors as dataset_selectors
from flywheel.datasets import services as dataset_services
from flywheel.datasets.serializers import (
    DatasetCreateSerializer,
    DatasetDiffSerializer,
    DatasetVersionSerializer,
    DiffPairQuerySerializer,
)
from flywheel.datasets.shards import ShardError
from flywheel.ingest import routing
from flywheel.ingest.feedback import FeedbackPolicy
from flywheel.models import DatasetStatus
from flywheel.retention.policy import RetentionPolicy
from flywheel.serializers import (
    FeedbackPolicySerializer,
    LabelingPolicySerializer,
    ProjectInputSerializer,
    ProjectSerializer,
    ProjectUpdateSerializer,
    RetentionPolicySerializer,
    RetrainingPolicySerializer,
    RoutingPolicySerializer,
)
from flywheel.training import evaluation, registry, runs, selectors
from flywheel.training.policy import RetrainingPolicy
from flywheel.training.serializers import (
    ModelVersionSerializer,
    PromotionInputSerializer,
    TrainingRunInputSerializer,
    TrainingRunSerializer,
)
from labeling import selectors as labeling_selectors
from labeling.policy import LabelingPolicy
from monitoring.policy import DriftPolicy
from monitoring.serializers import DriftPolicySerializer


def _change(project, current, target) -> list[str]:
    """What making `target` the champion changes, in the words the confirmation shows."""
    lines = [f"The champion becomes {target.name}"
             + (f" (it is {current.name} now)." if current is not None else " (there is none now).")]
    if target.dataset_version_id is not None:
        lines.append(f"Drift is then measured against dataset version {target.dataset_version.number}, "
                     f"the data {target.name} was trained on.")
    if routing.RoutingPolicy.from_dict(project.routing).demote_stale:
        lines.append(f"Open tasks routed by an older model go behind those {target.name} is unsure of.")
    lines.append("Apps that fetch the champion's artifact get the new one; the change is in the audit log.")
    return lines


def _training_page(request, project, *, errors=None, values=None, status=200):
    run_list = selectors.training_runs(project=project, limit=20)
    versions = selectors.model_versions(project=project)
    current, rollback_to = registry.rollback_target(project)
    for version in versions:
        version.change = _change(project, current, version)
    ready = dataset_selectors.dataset_versions(project=project).filter(status=DatasetStatus.READY)[:20]
    return render(request, "flywheel/training.html", {
        "project": project, "tab": "training", "errors": errors or {}, "values": values or {},
        "runs": TrainingRunSerializer(run_list, many=True).data,
        "models": list(zip(versions, ModelVersionSerializer(versions, many=True).data, strict=True)),
        "champion": current, "rollback_to": rollback_to,
        "rollback_change": _change(project, current, rollback_to) if rollback_to is not None else [],
        "promotions": selectors.promotions(project=project, limit=10),
        "ready_versions": [v.number for v in ready],
        "config": {"runs": f"/api/v1/projects/{project.slug}/training-runs/", "initial": None},
    }, status=status)


@login_required
def training(request, slug):
    project = console_project(request, slug, manage=request.method == "POST")
    if request.method != "POST":
        return _training_page(request, project)
    values = form_input(request.POST, ("dataset_version",))
    form = TrainingRunInputSerializer(data=values)
    if not form.is_valid():
        return _training_page(request, project, errors=flat_errors(form.errors), values=values, status=400)
    number = form.validated_data.get("dataset_version")
    try:
        version = dataset_selectors.dataset_version_get(project=project, number=number) if number else None
        run = runs.training_run_request(project=project, trigger="manual", dataset_version=version,
                                        actor=request.user)
    except DomainError as exc:
        return _training_page(request, project, errors=domain_errors(exc, field="dataset_version"), values=values,
                              status=400)
    messages.success(request, f"Training run #{run.number} is {run.status}.")
    return redirect("console-training", slug=project.slug)


def _reason(request):
    form = PromotionInputSerializer(data=form_input(request.POST, ("reason",)))
    if not form.is_valid():
        return None, "; ".join(f"{field}: {' '.join(errs)}" for field, errs in flat_errors(form.errors).items())
    return form.validated_data.get("reason", ""), None


@login_required
@require_POST
def model_promote(request, slug, name):
    project = console_project(request, slug, manage=True)
    reason, refused = _reason(request)
    if refused:
        messages.error(request, refused)
        return redirect("console-training", slug=project.slug)
    try:
        version = selectors.model_version_get(project=project, name=name)
        promotion = registry.model_promote(project=project, model_version=version, actor=request.user, reason=reason)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        if promotion is None:
            messages.error(request, f"'{name}' is already the champion.")
        else:
            messages.success(request, f"{name} is the champion"
                             + (f" (was {promotion.previous.name})." if promotion.previous else "."))
    return redirect("console-training", slug=project.slug)


@login_required
@require_POST
def model_rollback(request, slug):
    project = console_project(request, slug, manage=True)
    reason, refused = _reason(request)
    if refused:
        messages.error(request, refused)
        return redirect("console-training", slug=project.slug)
    try:
        promotion = registry.model_rollback(project=project, actor=request.user, reason=reason)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Rolled back: {promotion.model_version.name} is the champion again "
                                  f"(was {promotion.previous.name}).")
    return redirect("console-training", slug=project.slug)


# --- Datasets -------------------------------------------------------------------------------------


def _datasets_page(request, project, *, errors=None, values=None, diff=None, status=200):
    versions = dataset_selectors.dataset_versions(project=project)
    return render(request, "flywheel/datasets.html", {
        "project": project, "tab": "datasets", "errors": errors or {}, "values": values or {}, "diff": diff,
        "versions": DatasetVersionSerializer(versions, many=True).data,
        "ready_versions": [v.number for v in versions if v.status == DatasetStatus.READY],
        "config": {"versions": f"/api/v1/projects/{project.slug}/datasets/"},
    }, status=status)


@login_required
def datasets(request, slug):
    """GET: the versions, and the diff of two (?a=&b=); POST: a new version."""
    project = console_project(request, slug, manage=request.method == "POST")
    if request.method == "POST":
        values = form_input(request.POST, ("note",))
        form = DatasetCreateSerializer(data=values)
        if not form.is_valid():
            return _datasets_page(request, project, errors=flat_errors(form.errors), values=values, status=400)
        version = dataset_services.dataset_version_create(project=project, note=form.validated_data["note"],
                                                          actor=request.user)
        messages.success(request, f"Dataset version {version.number} is {version.status}.")
        return redirect("console-datasets", slug=project.slug)
    values = form_input(request.GET, ("a", "b", "examples"))
    if not {"a", "b"} & values.keys():
        return _datasets_page(request, project, values=values)
    query = DiffPairQuerySerializer(data=values)
    if not query.is_valid():
        return _datasets_page(request, project, errors=flat_errors(query.errors), values=values, status=400)
    a, b = query.validated_data["a"], query.validated_data["b"]
    for field, number in (("a", a), ("b", b)):
        try:  # each version's refusal (missing, not ready) under its own field
            dataset_selectors.dataset_version_ready(project=project, number=number)
        except DomainError as exc:
            return _datasets_page(request, project, errors=domain_errors(exc, field=field), values=values, status=400)
    try:
        diff = dataset_selectors.dataset_diff(project=project, a=a, b=b, examples=query.validated_data["examples"])
    except DomainError as exc:
        return _datasets_page(request, project, errors=domain_errors(exc), values=values, status=400)
    except (ShardError, StorageError) as exc:  # the store's fault, as the API's 502/503
        return _datasets_page(request, project, errors={"non_field_errors": [f"The stored version could not be "
                                                                             f"read: {exc}"]},
                              values=values, status=502)
    return _datasets_page(request, project, values=values, diff=DatasetDiffSerializer(diff).data)


# --- Projects -------------------------------------------------------------------------------------

POLICY_SECTIONS = {
    # section: (the API's serializer for it, its documented defaults, what it governs)
    "routing": (RoutingPolicySerializer, lambda: routing.RoutingPolicy().as_dict(),
                "Which predictions a person should look at, and how many a day."),
    "labeling": (LabelingPolicySerializer, lambda: LabelingPolicy().as_dict(),
                 "Gold tasks and when overlapping annotations resolve a label."),
    "feedback": (FeedbackPolicySerializer, lambda: FeedbackPolicy().as_dict(),
                 "When end users' corrections become labels."),
    "drift": (DriftPolicySerializer, lambda: DriftPolicy().as_dict(),
              "How drift is measured, how often, and where alerts go."),
    "retraining": (RetrainingPolicySerializer,
                   lambda: {**RetrainingPolicy().as_dict(), **evaluation.GatePolicy().as_dict()},
                   "When a run starts, how it trains, and what its candidate must beat."),
    "retention": (RetentionPolicySerializer, lambda: RetentionPolicy().as_dict(),
                  "How long raw predictions the loop no longer needs stay in the database, and whether they go to "
                  "the archive when they leave."),
}


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def _features(text: str) -> list[dict]:
    """One feature a line: `name type [min max]` (px0 numeric 0 16; region categorical)."""
    features = []
    for line in text.splitlines():
        tokens = line.split()
        if not tokens:
            continue
        feature = {"name": tokens[0], "type": tokens[1] if len(tokens) > 1 else ""}
        feature.update(dict(zip(("min", "max"), tokens[2:4], strict=False)))
        features.append(feature)
    return features


def _line_errors(errors: dict[str, list[str]], field: str) -> dict[str, list[str]]:
    """Errors of a list field's entries ("features[2].max") under the field, by line."""
    out = {k: v for k, v in errors.items() if not k.startswith(f"{field}[")}
    for key, refusals in errors.items():
        entry = re.fullmatch(rf"{field}\[(\d+)\](?:\.(\w+))?", key)
        if entry:
            where = f"line {int(entry[1]) + 1}" + (f", {entry[2]}" if entry[2] else "")
            out.setdefault(field, []).extend(f"{where}: {refusal}" for refusal in refusals)
    return out


@login_required
def project_new(request):
    console_role_check(request)
    values, errors, status = {}, {}, 200
    if request.method == "POST":
        values = {key: request.POST.get(key, "") for key in ("slug", "name", "labels", "features", "slices")}
        data = {"slug": values["slug"], "name": values["name"], "labels": _names(values["labels"]),
                "features": _features(values["features"]), "slices": _names(values["slices"])}
        form = ProjectInputSerializer(data=data)
        if form.is_valid():
            valid = form.validated_data
            try:
                project = project_services.project_create(
                    slug=valid["slug"], name=valid["name"], labels=valid["labels"], features=valid.get("features"),
                    slices=valid.get("slices"), actor=request.user)
            except DomainError as exc:
                errors = domain_errors(exc)
            else:
                messages.success(request, f"Project {project.name} is made. Set its policies below.")
                return redirect("console-settings", slug=project.slug)
        else:
            errors = _line_errors(flat_errors(form.errors), "features")
        status = 400
    return render(request, "flywheel/project_new.html", {"values": values, "errors": errors}, status=status)


def _settings_page(request, project, *, errors=None, posted=None, status=200):
    current = ProjectSerializer(project).data
    sections = [{
        "key": key, "about": about,
        "rows": policy_form(key, serializer(), current=current[key] or {}, defaults=defaults(),
                            errors=errors or {}, posted=posted),
    } for key, (serializer, defaults, about) in POLICY_SECTIONS.items()]
    general = {"name": (posted or {}).get("name", project.name),
               "labels": (posted or {}).get("labels", ", ".join(project.labels)),
               "slices": (posted or {}).get("slices", ", ".join(project.slices))}
    return render(request, "flywheel/settings.html", {
        "project": project, "tab": "settings", "sections": sections, "general": general, "errors": errors or {},
    }, status=status)


@login_required
def project_settings(request, slug):
    """GET: every policy field with its meaning, default and value; POST one section: the
    API's PATCH of that section, refused field by field with the API's words."""
    project = console_project(request, slug, manage=request.method == "POST")
    if request.method != "POST":
        return _settings_page(request, project)
    section = request.POST.get("section", "")
    if section == "general":
        posted = {key: request.POST.get(key, "") for key in ("name", "labels", "slices")}
        data = {"name": posted["name"], "labels": _names(posted["labels"]), "slices": _names(posted["slices"])}
    elif section in POLICY_SECTIONS:
        posted = {key: value for key, value in request.POST.items() if key.startswith(f"{section}.")}
        data = {section: policy_input(request.POST, section, POLICY_SECTIONS[section][0]())}
    else:
        messages.error(request, "That form was not understood.")
        return redirect("console-settings", slug=project.slug)
    form = ProjectUpdateSerializer(data=data)
    if not form.is_valid():
        return _settings_page(request, project, errors=flat_errors(form.errors), posted=posted, status=400)
    try:
        project_services.project_update(project=project, changes=form.validated_data, actor=request.user)
    except DomainError as exc:
        return _settings_page(request, project, errors=domain_errors(exc), posted=posted, status=400)
    messages.success(request, f"{section.capitalize()} saved.")
    return redirect("console-settings", slug=project.slug)


# --- Quality --------------------------------------------------------------------------------------

DIAGRAM = 200  # the reliability diagram's side, in SVG units


def _reliability(calibration: dict) -> list[dict]:
    """The reliability diagram's bars: per confidence bin, the accuracy the audit labels
    measured (the bar) against the bin's mean confidence (the diagonal), as SVG boxes."""
    bars = []
    for row in calibration.get("bins", []):
        height = row["accuracy"] * DIAGRAM
        bars.append({**row, "x": row["low"] * DIAGRAM, "width": (row["high"] - row["low"]) * DIAGRAM - 1,
                     "y": DIAGRAM - height, "height": height, "gap": row["confidence"] - row["accuracy"]})
    return bars


SERIES_WIDTH, SERIES_HEIGHT = 600, 160  # the accuracy-over-time chart, in SVG units


def _series_chart(version: dict) -> dict:
    """One model version's accuracy over time as SVG shapes: the label-free estimate's line
    and its 95% band, and per period with audit labels the audit estimate's dot and interval
    (red where the two disagree). The y axis starts at the lowest bound shown, rounded down
    to a tenth, so a few points of accuracy stay visible."""
    points = version["points"]
    bounds = [p["estimated_accuracy"]["low"] for p in points if p["estimated_accuracy"]]
    bounds += [p["audit"]["low"] for p in points if p["audit"]["n"]]
    floor = min(0.9, math.floor(min(bounds, default=0.0) * 10) / 10)
    step = SERIES_WIDTH / max(1, len(points) - 1)

    def y(value: float) -> float:
        return round(SERIES_HEIGHT * (1 - (value - floor) / (1 - floor)), 1)

    line, upper, lower, audits = [], [], [], []
    for i, p in enumerate(points):
        x = round(i * step, 1)
        estimate = p["estimated_accuracy"]
        if estimate:
            line.append(f"{x},{y(estimate['value'])}")
            upper.append(f"{x},{y(estimate['high'])}")
            lower.append(f"{x},{y(estimate['low'])}")
        if p["audit"]["n"]:
            audits.append({"x": x, "y": y(p["audit"]["accuracy"]), "low": y(p["audit"]["low"]),
                           "high": y(p["audit"]["high"]), "point": p,
                           "disagrees": p["consistent_with_audit"] is False})
    return {**version, "line": " ".join(line), "band": " ".join(upper + lower[::-1]), "audits": audits,
            "floor": floor, "disagreeing": sum(1 for a in audits if a["disagrees"]),
            "first": points[0]["start"][:13].replace("T", " ") if points else "",
            "last": points[-1]["start"][:13].replace("T", " ") if points else ""}


@login_required
def quality(request, slug):
    """Per-annotator figures, each model version's reliability diagram beside its ECE (from
    the audit labels, as the stats API reports them), and the queue by reason with its age."""
    project = console_project(request, slug)
    accuracy = selectors.production_accuracy(project=project)
    champion = registry.champion_get(project)
    for entry in accuracy:
        entry["is_champion"] = champion is not None and entry["model_version"] == champion.name
        entry["bars"] = _reliability(entry["calibration"])
    accuracy.sort(key=lambda entry: not entry["is_champion"])
    by = request.GET.get("accuracy_by")
    by = by if by in selectors.ACCURACY_SERIES else "day"
    series = selectors.estimated_accuracy_series(project=project, by=by)
    return render(request, "flywheel/quality.html", {
        "project": project, "tab": "quality", "size": DIAGRAM,
        "series": [_series_chart(version) for version in series["versions"]], "series_by": by,
        "series_size": (SERIES_WIDTH, SERIES_HEIGHT),
        "annotators": labeling_selectors.annotator_stats(project_id=project.pk),
        "agreement": labeling_selectors.project_agreement(project_id=project.pk, labels=project.labels),
        "accuracy": accuracy,
        "queue": labeling_selectors.queue_age_by_reason(project_id=project.pk),
    })
