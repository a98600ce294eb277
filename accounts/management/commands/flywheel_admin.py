"""flywheel_admin: create (or update) the first admin from the environment, for deployments
where nobody types at a prompt (docker compose, Kubernetes jobs)."""

import os

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Role
from accounts.services import account_upsert
from common.errors import DomainError

MIN_PASSWORD_CHARS = 12


class Command(BaseCommand):
    help = ("Create or update an admin named by FLYWHEEL_ADMIN_USERNAME with the password in "
            "FLYWHEEL_ADMIN_PASSWORD; does nothing when FLYWHEEL_ADMIN_USERNAME is unset. Safe to run on every start.")

    def handle(self, *args, **options):
        username = os.environ.get("FLYWHEEL_ADMIN_USERNAME", "").strip()
        password = os.environ.get("FLYWHEEL_ADMIN_PASSWORD", "")
        if not username:
            self.stdout.write("FLYWHEEL_ADMIN_USERNAME is not set: no admin created.")
            return
        if len(password) < MIN_PASSWORD_CHARS:
            raise CommandError(f"FLYWHEEL_ADMIN_PASSWORD must hold at least {MIN_PASSWORD_CHARS} characters.")
        try:
            account_upsert(username=username, role=Role.ADMIN, password=password)
        except DomainError as exc:
            raise CommandError(exc.message) from None
        # The API token is not printed: a deployment's logs are no place for it.
        self.stdout.write(f"Admin '{username}' is ready; sign in at /admin/ or /ops/.")
