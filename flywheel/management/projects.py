"""The projects a management command was asked to work on."""

from django.core.management.base import CommandError

from flywheel.models import Project


def projects_selected(slugs: list[str]):
    """The projects named by `--project SLUG` (repeatable), or every project when none is
    named, in slug order; a CommandError names any slug that matches no project."""
    projects = Project.objects.order_by("slug")
    if not slugs:
        return projects
    projects = projects.filter(slug__in=slugs)
    missing = set(slugs) - set(projects.values_list("slug", flat=True))
    if missing:
        raise CommandError(f"No project {', '.join(sorted(missing))}.")
    return projects
