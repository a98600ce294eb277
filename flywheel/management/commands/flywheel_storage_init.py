"""flywheel_storage_init: create the S3 bucket (or the local storage root) if it is missing."""

from django.core.management.base import BaseCommand, CommandError

from common.storage import S3Storage, StorageError, get_storage


class Command(BaseCommand):
    help = "Create the configured bucket or storage directory if it does not exist yet."

    def handle(self, *args, **options):
        storage = get_storage()
        try:
            if isinstance(storage, S3Storage):
                try:
                    storage.check()
                except StorageError:
                    storage.client.create_bucket(Bucket=storage.bucket)
            storage.check()
        except Exception as exc:  # noqa: BLE001 - reported to the operator as one clear line
            raise CommandError(f"Storage is not usable: {exc}") from exc
        self.stdout.write(f"storage ready: {storage.uri('')}")
