"""flywheel_demo: set up the handwritten-digits demo project and print how to log in."""

from django.core.management.base import BaseCommand

from sim.demo import demo_setup


class Command(BaseCommand):
    help = "Create the demo project (scikit-learn's digits), its users and some routed traffic."

    def add_arguments(self, parser):
        parser.add_argument("--traffic", type=int, default=600, help="Predictions to log.")
        parser.add_argument("--quiet", action="store_true", help="Print nothing.")
        parser.add_argument("--url", default="http://127.0.0.1:8000",
                            help="Where the service will be served, for the links printed (`make run` passes its "
                                 "HOST and PORT). Default: %(default)s.")

    def handle(self, *args, traffic, quiet, url, **options):
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
        base = url.rstrip("/")
        out(f"  Annotate:  {base}/label/      (log in as annotator)")
        out(f"  Review:    {base}/review/     (log in as reviewer)")
        out(f"  Ops:       {base}/ops/        (log in as ops)")
        out(f"  API docs:  {base}/api/docs/")
        out("")
