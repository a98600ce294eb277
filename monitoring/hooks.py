"""Where the app above plugs into monitoring. Dependencies point one way (docs/architecture.md):
monitoring never imports flywheel, yet a check wants the newest predictions profiled, a
dataset version must become a reference, and the ops dashboard shows labeling's and
training's figures. flywheel registers these callables in its AppConfig.ready()."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger(__name__)

_profiles_sync: Callable[..., Any] | None = None
_reference_from_dataset_version: Callable[..., Any] | None = None


def profiles_sync_register(fn: Callable[..., Any]) -> None:
    """fn(project_id=..., force_grids=...) profiles the project's predictions not yet profiled."""
    global _profiles_sync
    _profiles_sync = fn


def profiles_sync(*, project_id: int) -> None:
    """Bring a project's profiles up to date before reading them (on-demand checks and new
    references). The beat keeps them within a minute anyway, and without a beat (the
    embedded default) this is what keeps them at all. Exactly-once either way."""
    if _profiles_sync is not None:
        _profiles_sync(project_id=project_id, force_grids=True)


_estimated_accuracy: Callable[..., Any] | None = None


def estimated_accuracy_register(fn: Callable[..., Any]) -> None:
    """fn(project=..., current=(start, end), reference=(start, end)) -> {"model_version",
    "current": {"value", "low", "high", "predictions"}, "reference": {...}, "method"} or None."""
    global _estimated_accuracy
    _estimated_accuracy = fn


def estimated_accuracy(*, project, current: tuple, reference: tuple) -> dict | None:
    """The label-free estimated accuracy over two periods, when the app above can tell."""
    if _estimated_accuracy is None:
        return None
    return _estimated_accuracy(project=project, current=current, reference=reference)


def reference_from_dataset_version_register(fn: Callable[..., Any]) -> None:
    """fn(project=..., dataset_version=..., actor=...) -> Reference."""
    global _reference_from_dataset_version
    _reference_from_dataset_version = fn


def reference_from_dataset_version(*, project, dataset_version: int, actor):
    from common.errors import DomainError

    if _reference_from_dataset_version is None:
        raise DomainError("dataset_references_unavailable",
                          "Dataset versions cannot be used as references in this deployment.", status_code=409)
    return _reference_from_dataset_version(project=project, dataset_version=dataset_version, actor=actor)


@dataclass(frozen=True)
class Panel:
    """A panel of the ops dashboard another app provides. `data(project)` returns a dict,
    or None to hide the panel:

    - kind "bar", "stacked_bar" or "line": data["chart"] = {"labels": [...],
      "datasets": [{"label": ..., "data": [...]}]};
    - kind "interval" (an estimate with its interval, e.g. accuracy per model version):
      data["chart"] = {"labels": [...], "estimate": [...], "low": [...], "high": [...]};
    - kind "table": data["columns"] = [...] and data["rows"] = [[...], ...];
    - any kind: data["total"] (0 shows data["empty"] instead), data["kpi"] = {"label",
      "note"} to put data["total"] in the row of key figures, data["error"] to say why
      the panel has nothing.
    """

    key: str
    title: str
    data: Callable[[Any], dict | None]
    kind: str = "bar"
    order: int = 100
    help: str = ""


_panels: dict[str, Panel] = {}


def panel_register(panel: Panel) -> None:
    _panels[panel.key] = panel


def panels() -> list[Panel]:
    return sorted(_panels.values(), key=lambda p: (p.order, p.key))
