"""Create the prediction table's weekly partitions ahead, now, and list them."""

from django.core.management.base import BaseCommand

from flywheel import partitions


class Command(BaseCommand):
    help = (
        "Create the weekly partitions of the predictions table from this week to --weeks-ahead weeks on "
        "(PostgreSQL; the beat does it daily) and list every partition with its rows."
    )

    def add_arguments(self, parser):
        parser.add_argument("--weeks-ahead", type=int, default=partitions.WEEKS_AHEAD)

    def handle(self, *args, **options):
        if not partitions.is_partitioned():
            self.stdout.write("The predictions table is not partitioned (SQLite): nothing to do.")
            return
        for name in partitions.prediction_partitions_ensure(weeks_ahead=options["weeks_ahead"]):
            self.stdout.write(f"created {name}")
        for name, rows in partitions.partitions_rows().items():
            self.stdout.write(f"{name}: about {rows} rows")
