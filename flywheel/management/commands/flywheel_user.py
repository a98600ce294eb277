"""flywheel_user NAME --role ROLE [--project SLUG]...: create or update a user, print its new token."""

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Role
from accounts.services import account_upsert, token_issue
from common.errors import DomainError
from flywheel.models import Project


class Command(BaseCommand):
    help = ("Create or update a user with a role and project memberships. Prints one line, its API key, when it "
            "makes one (a new user, one without keys, or --rotate-token); keys are shown only then.")

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--project", action="append", default=[], metavar="SLUG",
                            help="A project the user is a member of (repeat for several).")
        parser.add_argument("--password", help="Password for session login to the web pages.")
        parser.add_argument("--rotate-token", action="store_true",
                            help="Replace the user's default key with a new one.")

    def handle(self, *args, name, role, project, password, rotate_token, **options):
        projects = []
        for slug in project:
            found = Project.objects.filter(slug=slug).first()
            if found is None:
                raise CommandError(f"No project '{slug}'.")
            projects.append(found)
        try:
            user, token = account_upsert(username=name, role=role, projects=projects, password=password)
            if rotate_token and token is None:
                token = token_issue(user=user).secret
        except DomainError as exc:
            raise CommandError(exc.message) from None
        if token:
            self.stdout.write(token)
        else:
            self.stderr.write(f"'{name}' already has an API key, shown when it was made; --rotate-token replaces it.")
