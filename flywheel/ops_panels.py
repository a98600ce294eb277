"""The ops dashboard's panels that other apps' figures fill: flywheel knows every app, so
it registers them with monitoring (which must not import labeling or flywheel). One data
function per panel; the shapes are in monitoring.hooks.Panel."""

from accounts import selectors as accounts_selectors
from flywheel.ingest import selectors as ingest_selectors
from flywheel.training import selectors as training_selectors
from labeling import selectors as labeling_selectors
from labeling.models import TaskReason
from monitoring.hooks import Panel, panel_register

_REASON_NAMES = dict(TaskReason.choices)


def queue_depth(project) -> dict:
    depth = labeling_selectors.queue_depth_by_reason(project_id=project.pk)
    reasons = sorted(depth, key=lambda r: -sum(depth[r].values()))
    statuses = [s for s in labeling_selectors.PANEL_QUEUE_STATUSES if any(s in depth[r] for r in reasons)]
    return {
        "total": sum(sum(v.values()) for v in depth.values()),
        "kpi": {"label": "In the queue", "note": "tasks waiting for a person"},
        "chart": {
            "labels": [_REASON_NAMES.get(r, r) for r in reasons],
            "datasets": [{"label": s, "data": [depth[r].get(s, 0) for r in reasons]} for s in statuses],
        },
        "empty": "The queue is empty: nothing waits for a person.",
    }


def labels_per_day(project) -> dict:
    days = labeling_selectors.labels_per_day_series(project_id=project.pk, days=30)
    return {
        "total": sum(n for _, n in days),
        "kpi": {"label": "Labels, 30 days", "note": f"{days[-1][1]} today"},
        "chart": {"labels": [day[5:] for day, _ in days],
                  "datasets": [{"label": "labels resolved", "data": [n for _, n in days]}]},
        "empty": "No labels resolved in the last 30 days.",
    }


def accuracy(project) -> dict:
    estimates = [e for e in training_selectors.production_accuracy(project=project) if e["accuracy"]["n"]]
    return {
        "total": len(estimates),
        "chart": {"labels": [e["model_version"] for e in estimates],
                  "estimate": [e["accuracy"]["accuracy"] for e in estimates],
                  "low": [e["accuracy"]["low"] for e in estimates],
                  "high": [e["accuracy"]["high"] for e in estimates]},
        "empty": "No audit sample has been labeled yet: accuracy is estimated from it.",
    }


def audit_and_calibration(project) -> dict:
    def percent(value):
        return "–" if value is None else f"{value:.1%}"

    rows = []
    for e in training_selectors.production_accuracy(project=project):
        a = e["accuracy"]
        rows.append([
            e["model_version"], e["audit"]["predictions"], e["audit"]["labeled"],
            f"{percent(a['accuracy'])} ({percent(a['low'])} to {percent(a['high'])})" if a["n"] else "–",
            "–" if e["calibration"]["ece"] is None else f"{e['calibration']['ece']:.3f}",
        ])
    return {"total": len(rows), "columns": ["model version", "audit sample", "labeled", "accuracy (95% interval)",
                                            "calibration error (ECE)"],
            "rows": rows, "empty": "No predictions were drawn into the audit sample yet."}


def feedback_rates(project) -> dict:
    rates = ingest_selectors.feedback_rates(project=project)["rates"]
    days = sorted({r["day"] for r in rates})
    versions = sorted({r["model_version"] for r in rates})
    by = {(r["model_version"], r["day"]): r for r in rates}
    datasets = []
    for version in versions:
        for kind in ("corrected", "rejected", "confirmed"):
            points = [round(100 * by[(version, day)][f"{kind}_rate"], 2) if (version, day) in by else None
                      for day in days]
            if any(points):
                datasets.append({"label": f"{version} {kind} (%)", "data": points})
    return {"total": len(datasets), "chart": {"labels": [day[5:] for day in days], "datasets": datasets},
            "empty": "No feedback from end users in the last 14 days."}


def training_runs(project) -> dict:
    rows = []
    for run in training_selectors.training_runs(project=project, limit=12):
        gate = "passed" if run.gate.get("passed") else ("refused" if run.gate else "–")
        reasons = run.gate.get("reasons", [])
        why = next((r for r in reasons if r.startswith(("does not", "falls behind", "the difference"))), "")
        rows.append([
            f"#{run.number}", run.created_at.strftime("%Y-%m-%d %H:%M"), run.trigger,
            f"v{run.dataset_version.number}" if run.dataset_version else "–",
            run.model_version.name if run.model_version else "–",
            run.status if run.status != "running" else f"running: {run.stage}",
            gate + (f" ({why})" if why else ""), "yes" if run.promoted else "",
        ])
    return {"total": len(rows), "columns": ["run", "started", "trigger", "dataset", "candidate", "status", "gate",
                                            "promoted"],
            "rows": rows, "empty": "No training run yet."}


def champion_history(project) -> dict:
    rows = [[p.created_at.strftime("%Y-%m-%d %H:%M"), p.get_action_display(), p.model_version.name,
             p.previous.name if p.previous else "–", p.actor_name, p.reason]
            for p in training_selectors.promotions(project=project, limit=10)]
    return {"total": len(rows), "columns": ["when", "change", "champion", "before", "by", "why"], "rows": rows,
            "empty": "No model has been promoted yet."}


def keys_expiring(project) -> dict:
    rows = [[t.user.username, t.name, f"{t.prefix}…", ", ".join(t.scope_list) or "full",
             t.expires_at.strftime("%Y-%m-%d %H:%M"),
             t.last_used_at.strftime("%Y-%m-%d %H:%M") if t.last_used_at else "never"]
            for t in accounts_selectors.tokens_expiring(project_id=project.pk)[:50]]
    return {"total": len(rows), "columns": ["account", "key", "prefix", "scopes", "expires (UTC)", "last used"],
            "rows": rows, "empty": "No member's API key expires in the next 7 days."}


def register() -> None:
    panel_register(Panel(key="accuracy", title="Estimated accuracy per model version", data=accuracy,
                         kind="interval", order=30,
                         help="From the random audit sample and its human labels, with a 95% interval."))
    panel_register(Panel(key="audit", title="Audit sample and calibration", data=audit_and_calibration,
                         kind="table", order=35,
                         help="How much of the audit sample is labeled, and how well confidence matches accuracy."))
    panel_register(Panel(key="feedback", title="Feedback from end users", data=feedback_rates, kind="line",
                         order=40, help="Share of each model version's predictions of the day, by what users did."))
    panel_register(Panel(key="training_runs", title="Training runs", data=training_runs, kind="table", order=50,
                         help="Retraining: dataset, train, evaluate, gate, promote."))
    panel_register(Panel(key="promotions", title="Champion changes", data=champion_history, kind="table",
                         order=55, help="Promotions and rollbacks, with who or what made them."))
    panel_register(Panel(key="queue_depth", title="Queue depth by reason", data=queue_depth, kind="stacked_bar",
                         order=10, help="Tasks waiting for a person, by why they were routed."))
    panel_register(Panel(key="keys_expiring", title="API keys expiring within 7 days", data=keys_expiring,
                         kind="table", order=60,
                         help="Keys of this project's members that stop working soon: add the next one, deploy "
                              "it, then revoke the old one."))
    panel_register(Panel(key="labels_per_day", title="Labels per day", data=labels_per_day, kind="bar", order=20,
                         help="Resolved labels over the last 30 days (UTC)."))
