"""What the ops dashboard shows for a project: one data function per panel. Drift panels
are monitoring's own; the others come from monitoring.hooks.panels(), which flywheel fills
(queue depth, labels per day, and later feedback rates, accuracy and training runs)."""

from datetime import timedelta

import numpy as np
import structlog
from django.utils import timezone

from monitoring import hooks, selectors, services, stats
from monitoring.models import DriftState, ProfileSource
from monitoring.policy import DriftPolicy

log = structlog.get_logger(__name__)

SHOWN_SERIES = 8
CLOSEST_SHOWN = 3
CONFIDENCE_BINS = 20


def _shares(counts: list[int]) -> list[float]:
    total = sum(counts)
    return [round(c / total, 5) if total else 0.0 for c in counts]


def _histogram_chart(result: dict) -> dict:
    """Reference and current shares over the report's bins, leaving out bins both lack."""
    histogram = result["histogram"]
    keep = [i for i, (r, c) in enumerate(zip(histogram["reference"], histogram["current"], strict=True)) if r or c]
    reference = _shares([histogram["reference"][i] for i in keep])
    current = _shares([histogram["current"][i] for i in keep])
    return {"labels": [histogram["bins"][i] for i in keep], "reference": reference, "current": current}


def _region_text(region: dict) -> str:
    if "categories" in region:
        return f"{region['feature']} in {', '.join(region['categories'])}"
    low, high = region.get("low"), region.get("high")
    if low is None:
        return f"{region['feature']} < {stats_number(high)}"
    if high is None:
        return f"{region['feature']} ≥ {stats_number(low)}"
    return f"{region['feature']} {stats_number(low)} to {stats_number(high)}"


def stats_number(value: float) -> str:
    return f"{value:.4g}"


def actions_text(actions: dict) -> list[str]:
    """What an open alert makes routing do, in words for the alert box."""
    out = []
    if actions.get("boost_audit_rate"):
        out.append(f"random labeling draw raised to {actions['boost_audit_rate']:.0%}")
    if actions.get("route_drifted"):
        regions = actions.get("regions") or []
        out.append("routing drifted regions: " + "; ".join(_region_text(r) for r in regions) if regions
                   else "routing drifted regions: none found")
        if actions.get("outliers"):
            outliers = actions["outliers"]
            out.append(f"routing multivariate outliers of {', '.join(outliers['features'])} (reconstruction error "
                       f"above the reference's {outliers['level']:.0%} percentile)")
    return out


def summary(project, latest) -> dict:
    reference = selectors.reference_current(project=project)
    alert = selectors.alert_open(project=project)
    since = timezone.now() - timedelta(hours=24)
    window = selectors.window_histograms(project_id=project.pk, start=since.replace(minute=0, second=0,
                                                                                    microsecond=0),
                                         end=timezone.now() + timedelta(hours=1))
    return {
        "predictions_24h": window.count,
        "latest": None if latest is None else {
            "id": latest.pk, "created_at": latest.created_at, "drifted": latest.drifted,
            "window_count": latest.window_count, "trigger": latest.trigger.replace("_", " "),
            "drifted_fields": [r["name"] for r in [*latest.features, latest.prediction, latest.confidence or {},
                                                   latest.multivariate or {}] if r.get("drifted")],
            "fields": len(latest.features) + 2,
        },
        "reference": None if reference is None else selectors.reference_info(reference),
        "alert": None if alert is None else {"id": alert.pk, "since": alert.created_at, "fields": alert.features,
                                             "actions": actions_text(alert.actions)},
        "policy": DriftPolicy.from_dict(project.drift),
    }


def drift_over_time(project) -> dict | None:
    """Effect size over threshold per field per check, the largest few shown and the rest
    a click away."""
    history = selectors.drift_history(project=project, days=7)
    if not history["times"]:
        return None
    # Each field is judged against its own threshold (the practical one, or the chance level
    # for its sample sizes), so one fixed line would sit under fields that did not drift:
    # each point is the field's effect size over the threshold applied to it, and 1 is the line.
    ratios = {name: [None if v is None or not t else v / t for v, t in zip(values, history["thresholds"][name],
                                                                             strict=True)]
              for name, values in history["series"].items()}
    peak = {name: max((v for v in values if v is not None), default=0.0) for name, values in ratios.items()}
    ranked = sorted(peak, key=lambda name: -peak[name])
    return {
        "times": history["times"],
        "series": [{"name": name, "values": ratios[name], "effect": history["series"][name],
                    "thresholds": history["thresholds"][name], "drifted": history["drifted"][name],
                    "hidden": i >= SHOWN_SERIES} for i, name in enumerate(ranked)],
        "threshold": 1.0,
        "checks": len(history["times"]),
    }


def drifted_features(latest) -> dict | None:
    """The latest check's drifted fields with both histograms; when none drifted, the
    closest ones, so the panel still says where things stand."""
    if latest is None:
        return None
    results = [*latest.features, latest.prediction, *([latest.confidence] if latest.confidence else [])]
    drifted = [r for r in results if r["drifted"]]
    shown = drifted or sorted(
        (r for r in results if r["value"] is not None and r["threshold"]),
        key=lambda r: -(r["value"] / r["threshold"]),
    )[:CLOSEST_SHOWN]
    return {
        "any_drifted": bool(drifted) or bool(latest.multivariate and latest.multivariate["drifted"]),
        "multivariate": latest.multivariate,
        "fields": [{
            "name": r["name"], "type": r["type"], "statistic": r["statistic"], "value": r["value"],
            "threshold": r["threshold"],
            "p_value": r["p_value_adjusted"] if r["p_value_adjusted"] is not None else r["p_value"],
            "test": r["test"], "drifted": r["drifted"], "count": r["count"], "reason": r["reason"],
            "reference_count": r["reference_count"], "statistics": r["statistics"],
            "chart": _histogram_chart(r),
        } for r in shown],
    }


def prediction_distributions(project) -> dict | None:
    """Predicted labels and confidence over the last 24 hours beside the reference's,
    straight from the profiles (no check needed)."""
    now = timezone.now()
    window = selectors.window_histograms(project_id=project.pk, start=now.replace(minute=0, second=0, microsecond=0)
                                         - timedelta(hours=23), end=now + timedelta(hours=1))
    if window.count == 0:
        return None
    reference = selectors.reference_current(project=project)
    reference_fields = selectors.reference_histograms(reference=reference) if reference else {}
    state = DriftState.objects.filter(project_id=project.pk).first()
    fields = {f.name: f for f in services.fields_from_grids(state.grids if state else {}, project.features)
              if f.source == ProfileSource.PREDICTION}
    empty = np.zeros(1, dtype=np.int64)

    label_field = fields[services.LABEL]
    categories = label_field.vocabulary.categories
    size = label_field.vocabulary.size
    current = stats.padded(window.fields.get((ProfileSource.PREDICTION, services.LABEL), empty), size)
    ref = stats.padded(reference_fields.get((ProfileSource.PREDICTION, services.LABEL), empty), size)
    used = [i for i in range(stats.FIRST_CATEGORY, size) if current[i] or ref[i]]
    labels = {"labels": [categories[i - stats.FIRST_CATEGORY] for i in used],
              "current": _shares([int(current[i]) for i in used]),
              "reference": _shares([int(ref[i]) for i in used]) if reference_fields else None}

    grid = fields[services.CONFIDENCE].grid
    per_bin = grid.bins // CONFIDENCE_BINS
    current = stats.padded(window.fields.get((ProfileSource.PREDICTION, services.CONFIDENCE), empty), grid.size)
    ref = stats.padded(reference_fields.get((ProfileSource.PREDICTION, services.CONFIDENCE), empty), grid.size)

    def coarse(counts):
        return counts[2:2 + grid.bins].reshape(CONFIDENCE_BINS, per_bin).sum(axis=1).tolist()

    step = (grid.high - grid.low) / CONFIDENCE_BINS
    confidence = {"labels": [f"{grid.low + i * step:.2f}" for i in range(CONFIDENCE_BINS)],
                  "current": _shares(coarse(current)),
                  "reference": _shares(coarse(ref)) if ref.sum() else None}
    return {"count": window.count, "labels": labels, "confidence": confidence}


def recent_reports(project, limit: int = 8) -> list[dict]:
    return [{
        "id": r.pk, "created_at": r.created_at, "window_start": r.window_start, "window_end": r.window_end,
        "trigger": r.trigger.replace("_", " "), "count": r.window_count,
        "drifted": r.drifted, "alerted": r.alert_id is not None,
        "fields": [x["name"] for x in [*r.features, r.prediction, r.confidence or {}, r.multivariate or {}]
                   if x.get("drifted")],
    } for r in selectors.reports_list(project=project, limit=limit)]


def other_panels(project) -> list[dict]:
    out = []
    for panel in hooks.panels():
        try:
            data = panel.data(project)
        except Exception:  # noqa: BLE001 - one broken panel must not take the dashboard down
            log.exception("ops.panel_failed", panel=panel.key, project=project.slug)
            data = {"error": "This panel could not be loaded; the error is logged."}
        if data is not None:
            out.append({"key": panel.key, "title": panel.title, "kind": panel.kind, "help": panel.help,
                        "data": data})
    return out


def project_dashboard(project) -> dict:
    latest = (selectors.reports_list(project=project, limit=1) or [None])[0]
    return {
        "summary": summary(project, latest),
        "over_time": drift_over_time(project),
        "drifted": drifted_features(latest),
        "predictions": prediction_distributions(project),
        "reports": recent_reports(project),
        "panels": other_panels(project),
    }
