"""dataset_pull SLUG VERSION DIR: download a dataset version and verify every hash."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from common.errors import DomainError
from common.storage import StorageError
from flywheel.datasets import selectors as dataset_selectors
from flywheel.datasets.shards import ShardError
from flywheel.models import Project


class Command(BaseCommand):
    help = ("Download a ready dataset version into DIR (manifest.json and shards/<sha256>.parquet), verifying the "
            "manifest against the hash recorded at publication and every shard against its name. A corrupted "
            "shard is refused and the command fails; shards already in DIR and intact are not downloaded again.")

    def add_arguments(self, parser):
        parser.add_argument("slug", help="The project's slug.")
        parser.add_argument("version", type=int, help="The dataset version number.")
        parser.add_argument("directory", type=Path, help="Where to put it (created if missing).")

    def handle(self, *args, slug, version, directory, **options):
        project = Project.objects.filter(slug=slug).first()
        if project is None:
            raise CommandError(f"No project '{slug}'.")
        try:
            found = dataset_selectors.dataset_version_ready(project=project, number=version)
            result = dataset_selectors.dataset_pull(version=found, directory=directory)
        except DomainError as exc:
            raise CommandError(exc.message) from None
        except ShardError as exc:
            raise CommandError(f"Refused: {exc}") from None
        except StorageError as exc:
            raise CommandError(f"Storage is not usable: {exc}") from None
        self.stdout.write(
            f"{slug} v{version}: {result.rows} rows in {result.shards} shards ({result.bytes} bytes), "
            f"{result.downloaded} downloaded, all verified, in {result.directory}")
