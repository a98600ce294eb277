"""flywheel_retention [--project SLUG]: run today's retention now (the beat runs it daily)."""

from django.core.management.base import BaseCommand, CommandError

from flywheel.management.projects import projects_selected
from flywheel.retention import services as retention


class Command(BaseCommand):
    help = ("Archive and remove the predictions past each project's retention.raw_days that the loop no longer "
            "needs (docs/archive.md). Today's run of a project that already succeeded is not repeated.")

    def add_arguments(self, parser):
        parser.add_argument("--project", action="append", default=[], metavar="SLUG",
                            help="Project slug; repeat for several. Default: every project.")

    def handle(self, *args, **options):
        projects = projects_selected(options["project"])
        failed = []
        for project in projects:
            try:
                run = retention.retention_run(project=project)
            except Exception as exc:  # noqa: BLE001 (reported below; the other projects still run)
                failed.append(project.slug)
                self.stderr.write(f"{project.slug}: failed, nothing of the failed day removed: {exc}")
                continue
            if run is None:
                self.stdout.write(f"{project.slug}: another run took over")
                continue
            self.stdout.write(
                f"{project.slug}: {run.status}; archived {run.archived}, removed {run.removed}, held {run.held}"
                + (f", partitions dropped: {', '.join(run.partitions_dropped)}" if run.partitions_dropped else ""))
        if failed:
            raise CommandError(f"Retention failed for {', '.join(failed)}.")
