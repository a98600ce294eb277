"""flywheel_demo: set up the handwritten-digits demo project and print how to log in."""

from django.core.management.base import BaseCommand

from sim.demo import demo_setup


class Command(BaseCommand):
    help = "Create the demo project (scikit-learn's digits), its users and some routed traffic."

    def add_arguments(self, parser):
        parser.add_argument("--traffic", type=int, default=600, help="Predictions to log.")
        parser.add_argument("--quiet", action="store_true", help="Print nothing.")

    def handle(self, *args, traffic, quiet, **options):
        result = demo_setup(traffic=traffic)
        if quiet:
            return
        out = self.stdout.write
        out("")
        out(f"Flywheel demo project '{result.project.slug}': champion model {result.champion}; "
            f"{result.logged} new predictions logged ({result.routed} routed to the annotation queue).")
        out("")
        out(f"  {'user':<10} {'role':<10} {'password':<14} API token")
        for name, role, password, token in result.credentials:
            out(f"  {name:<10} {role:<10} {password:<14} {token}")
        out("")
        out("  Annotate:  http://127.0.0.1:8000/label/      (log in as annotator)")
        out("  Review:    http://127.0.0.1:8000/review/     (log in as reviewer)")
        out("  Ops:       http://127.0.0.1:8000/ops/        (log in as ops)")
        out("  API docs:  http://127.0.0.1:8000/api/docs/")
        out("")
