"""Who a user is to Flywheel: a role, the projects they belong to, and what they did."""

from django.conf import settings
from django.db import models

from common.models import TimeStampedModel


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    OPS = "ops", "Ops"
    REVIEWER = "reviewer", "Reviewer"
    ANNOTATOR = "annotator", "Annotator"
    APP = "app", "App (service account)"


class Account(TimeStampedModel):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="account")
    role = models.CharField(max_length=16, choices=Role.choices, help_text="What this user may do.")

    def __str__(self) -> str:
        return f"{self.user.username} ({self.role})"


class Membership(TimeStampedModel):
    """A user sees only the projects they are a member of (admins see all)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    project = models.ForeignKey("flywheel.Project", on_delete=models.CASCADE, related_name="memberships")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "project"], name="membership_unique")]


class AuditEvent(models.Model):
    """Append-only record of the changes people must be able to account for later:
    promotions, rollbacks, label changes, role changes."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              help_text="Who did it; empty when the system did.")
    actor_name = models.CharField(max_length=150, help_text="Who did it, kept after the user is gone.")
    action = models.CharField(max_length=64, help_text="What happened, e.g. model.promote.")
    project = models.ForeignKey("flywheel.Project", null=True, blank=True, on_delete=models.CASCADE,
                                related_name="+")
    target = models.CharField(max_length=200, blank=True, help_text="What it happened to.")
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["project", "-created_at"], name="audit_project_time"),
            models.Index(fields=["action", "-created_at"], name="audit_action_time"),
        ]


class LoginFailure(models.Model):
    """A failed web sign-in. Kept for the lockout window only: enough of them for one
    username, or from one address, refuse further sign-ins until they age out. In the
    database because every gunicorn worker must see the same count."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    username = models.CharField(max_length=150, help_text="The username tried, lower-cased.")
    ip = models.GenericIPAddressField(null=True, blank=True, help_text="The address the attempt came from.")

    class Meta:
        indexes = [
            models.Index(fields=["username", "-created_at"], name="login_failure_username"),
            models.Index(fields=["ip", "-created_at"], name="login_failure_ip"),
        ]


class TokenScope(models.TextChoices):
    """What a token may do when it is narrower than its account (no scope: all the account may)."""

    INGEST = "ingest", "Ingest (log predictions and feedback only)"
    READ = "read", "Read (GET only)"


class ApiToken(models.Model):
    """An API key, kept the way it can no longer be read back: an identifying prefix to find
    it by and a SHA-256 digest of the whole key to check it with. The key itself is shown
    once, when it is made. An account may hold several, each with a name, an expiry and a
    scope, so a key can be rotated by adding the next one before revoking the last."""

    DEFAULT_NAME = "default"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=64, default=DEFAULT_NAME,
                            help_text='What the key is for; "default" is the one POST {"username"} replaces.')
    prefix = models.CharField(max_length=12, db_index=True,
                              help_text="The key's first characters: enough to find and recognise it, not to use it.")
    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the whole key, hex.")
    scopes = models.CharField(max_length=32, blank=True, default="",
                              help_text="Comma-separated TokenScope values; empty means the account's full rights.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Refused from this time on; empty: never.")
    last_used_at = models.DateTimeField(null=True, blank=True,
                                        help_text="Last request with it, written at most once a minute.")
    expiry_recorded = models.BooleanField(default=False, help_text="Its expiry is in the audit log.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="api_token_user_name_unique")]
        indexes = [models.Index(fields=["expires_at"], name="api_token_expires_at",
                                condition=models.Q(expires_at__isnull=False))]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.name} ({self.prefix}…)"

    @property
    def scope_list(self) -> list[str]:
        return [s for s in self.scopes.split(",") if s]
