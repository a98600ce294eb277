"""Count drift profiles again from the stored predictions (they are a denormalized counter)."""

from django.core.management.base import BaseCommand, CommandError

from flywheel.ingest import profiling
from flywheel.management.projects import projects_selected
from flywheel.models import RetentionRun


class Command(BaseCommand):
    help = "Rebuild the hourly drift profiles of one project (or all) from its predictions, atomically."

    def add_arguments(self, parser):
        parser.add_argument("--project", action="append", default=[], metavar="SLUG",
                            help="Project slug; repeat for several. Default: every project.")

    def handle(self, *args, **options):
        projects = projects_selected(options["project"])
        # Retention removed some of these projects' predictions: a recount would lose the
        # hours they were counted in. Their profiles are the only record left of them.
        pruned = sorted(RetentionRun.objects.filter(project__in=projects, removed__gt=0)
                        .values_list("project__slug", flat=True).distinct())
        if pruned:
            raise CommandError(f"Retention removed predictions of {', '.join(pruned)}: a recount from the table would "
                               "drop their hours from the profiles. Nothing was rebuilt.")
        for project in projects:
            count = profiling.profiles_rebuild(project_id=project.pk)
            self.stdout.write(f"{project.slug}: {count} predictions profiled")
