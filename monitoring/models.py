"""Hourly profiles of what a project's models see and predict, the references drift is
measured against, drift reports, alerts and their webhook deliveries."""

from django.conf import settings
from django.db import models

from common.models import TimeStampedModel


class ProfileSource(models.TextChoices):
    FEATURE = "feature", "Input feature"
    PREDICTION = "prediction", "What the model predicted (label, confidence)"


class DriftState(TimeStampedModel):
    """Monitoring's row per project: the fine grids profiles are counted on, and the lock
    that serializes profiling, reference changes and alerting of one project."""

    project = models.OneToOneField("flywheel.Project", on_delete=models.CASCADE, related_name="+")
    grids = models.JSONField(
        default=dict, blank=True,
        help_text='Fine grid per field: {"feature": {name: grid}, "prediction": {"label": ..., "confidence": ...}}. '
                  "Numeric grids never change once made; category lists only grow.",
    )
    last_scheduled_check_at = models.DateTimeField(null=True, blank=True)


class Profile(models.Model):
    """Counts of one field's values over its fine grid, for the predictions a project's
    models made in one hour. A window's histogram is the sum of its hours."""

    project = models.ForeignKey("flywheel.Project", on_delete=models.CASCADE, related_name="+", db_index=False)
    hour = models.DateTimeField(help_text="Start of the UTC hour the predictions were made in (created_at).")
    source = models.CharField(max_length=16, choices=ProfileSource.choices)
    name = models.CharField(max_length=64, help_text="Feature name, or label / confidence.")
    count = models.BigIntegerField(help_text="Predictions counted, missing values included.")
    bins = models.BinaryField(help_text="Sparse fine-bin counts: (bin uint16, count uint32) pairs.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "hour", "source", "name"], name="profile_unique_hour_field"),
        ]


class ProfileSample(models.Model):
    """A uniform random sample of one hour's predictions' numeric features, for joint
    (multivariate) drift: each row carries a random key and an hour keeps the rows with
    the smallest keys, so a window's sample is the smallest keys of its hours, as
    mergeable as the profiles."""

    project = models.ForeignKey("flywheel.Project", on_delete=models.CASCADE, related_name="+", db_index=False)
    hour = models.DateTimeField(help_text="Start of the UTC hour the predictions were made in.")
    names = models.JSONField(help_text="The numeric features, in the order of each row's values.")
    seen = models.BigIntegerField(help_text="Predictions the sample was drawn from.")
    keys = models.BinaryField(help_text="Each row's random key in [0, 1), float64.")
    rows = models.BinaryField(help_text="The rows, float32, row-major; missing values NaN.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "hour"], name="profile_sample_unique_hour"),
        ]


class ReferenceKind(models.TextChoices):
    WINDOW = "window", "A window of production predictions ops chose"
    DATASET_VERSION = "dataset_version", "The dataset version a model was trained on"
    TRAINING_DATA = "training_data", "Rows a model was trained on, handed in without a dataset version"
    PRECEDING_WINDOW = "preceding_window", "The 7 days before the checked window (no reference set)"


class Reference(TimeStampedModel):
    """What drift is measured against. Append-only: setting a new one keeps the old rows
    (with who set them and when); one is current per project. Its histograms are frozen
    when it is set."""

    project = models.ForeignKey("flywheel.Project", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=24, choices=ReferenceKind.choices)
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    dataset_version = models.PositiveIntegerField(null=True, blank=True)
    model_version = models.CharField(max_length=64, blank=True, help_text="The model trained on it, if any.")
    count = models.BigIntegerField(help_text="Predictions or rows it holds.")
    note = models.CharField(max_length=500, blank=True)
    set_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+", help_text="Who set it; empty when the system did.")
    set_by_name = models.CharField(max_length=150, help_text="Who set it, kept after the user is gone.")
    is_current = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project"], condition=models.Q(is_current=True),
                                    name="reference_one_current_per_project"),
        ]
        indexes = [models.Index(fields=["project", "-created_at"], name="reference_project_time")]


class ReferenceProfile(models.Model):
    """One field's fine histogram in a reference."""

    reference = models.ForeignKey(Reference, on_delete=models.CASCADE, related_name="profiles")
    source = models.CharField(max_length=16, choices=ProfileSource.choices)
    name = models.CharField(max_length=64)
    count = models.BigIntegerField()
    bins = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["reference", "source", "name"], name="reference_profile_unique_field"),
        ]


class ReferenceSample(models.Model):
    """The rows joint drift is measured against, frozen with the reference."""

    reference = models.OneToOneField(Reference, on_delete=models.CASCADE, related_name="sample")
    names = models.JSONField()
    rows = models.BinaryField(help_text="float32, row-major; missing values NaN.")


class CheckTrigger(models.TextChoices):
    SCHEDULED = "scheduled", "Beat schedule"
    ON_DEMAND = "on_demand", "Requested through the API"


class DriftReport(models.Model):
    """The outcome of one drift check. Immutable once written."""

    project = models.ForeignKey("flywheel.Project", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField()
    trigger = models.CharField(max_length=16, choices=CheckTrigger.choices)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    window_count = models.BigIntegerField()
    reference = models.ForeignKey(Reference, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                  help_text="Empty when the check used the preceding window.")
    reference_info = models.JSONField(help_text="The reference as it was: kind, count, window, who set it.")
    drifted = models.BooleanField()
    features = models.JSONField(help_text="Per feature: statistic, value, p-value, threshold, verdict, histograms.")
    prediction = models.JSONField(help_text="The predicted label's distribution, judged like a feature.")
    confidence = models.JSONField(null=True, blank=True, help_text="The confidence's distribution.")
    multivariate = models.JSONField(
        null=True, blank=True,
        help_text="Joint drift of the numeric features on random samples: statistic, value, threshold, p-value, "
                  "verdict.")
    accuracy = models.JSONField(
        null=True, blank=True,
        help_text="The label-free estimated accuracy over the window and the reference period, its drop and "
                  "verdict against the policy's accuracy_drop.")
    policy = models.JSONField(help_text="The thresholds the verdicts used.")
    alert = models.ForeignKey("DriftAlert", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                              help_text="The alert this report raised or re-raised, if any.")
    duration_ms = models.FloatField()

    class Meta:
        indexes = [models.Index(fields=["project", "-created_at"], name="driftreport_project_time")]


class AlertState(models.TextChoices):
    OPEN = "open", "Drift persists"
    RESOLVED = "resolved", "A later check found no drift"


class DriftAlert(TimeStampedModel):
    """One episode of drift: opened by the first drifted report, absorbing the reports that
    find the same drift (no new alert), re-raised when another feature drifts, resolved by
    the first report that finds none."""

    project = models.ForeignKey("flywheel.Project", on_delete=models.CASCADE, related_name="+")
    state = models.CharField(max_length=16, choices=AlertState.choices, default=AlertState.OPEN)
    features = models.JSONField(default=list, help_text="Every field alerted on in this episode.")
    opened_by = models.ForeignKey(DriftReport, on_delete=models.CASCADE, related_name="+")
    last_report = models.ForeignKey(DriftReport, on_delete=models.CASCADE, related_name="+")
    resolved_by = models.ForeignKey(DriftReport, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    resolved_at = models.DateTimeField(null=True, blank=True)
    actions = models.JSONField(
        default=dict, blank=True,
        help_text="What the loop does while the alert is open (the drift policy's on_drift): boost_audit_rate, "
                  "route_drifted and the regions that grew, from the latest report that found drift.")
    outlier_model = models.JSONField(
        null=True, blank=True,
        help_text="While route_drifted is on and the latest drifted report found joint drift: the reference's "
                  "quantiles, PCA and error threshold that tell a multivariate outlier (monitoring.stats."
                  "outlier_model). Kept out of actions, which the API and webhooks show.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project"], condition=models.Q(state="open"),
                                    name="driftalert_one_open_per_project"),
        ]


class DeliveryState(models.TextChoices):
    PENDING = "pending", "Waiting for its next attempt"
    DELIVERED = "delivered", "The receiver answered 2xx"
    FAILED = "failed", "Gave up: a permanent error, or retries ran out"


class WebhookDelivery(TimeStampedModel):
    """One alert to deliver to a project's webhook. Its body is fixed when it is made, so
    every attempt sends the same event; the receiver deduplicates on its id."""

    project = models.ForeignKey("flywheel.Project", on_delete=models.CASCADE, related_name="+")
    alert = models.ForeignKey(DriftAlert, on_delete=models.CASCADE, related_name="deliveries")
    report = models.ForeignKey(DriftReport, on_delete=models.CASCADE, related_name="+")
    event = models.CharField(max_length=32)
    url = models.CharField(max_length=500)
    payload = models.JSONField()
    state = models.CharField(max_length=16, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    lease_expires_at = models.DateTimeField(null=True, blank=True,
                                            help_text="A worker is sending it until then.")
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["next_attempt_at"], name="webhook_delivery_due",
                         condition=models.Q(state="pending")),
        ]


class WebhookAttempt(models.Model):
    """One try at sending a delivery, whatever came of it."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.FloatField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    succeeded = models.BooleanField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_unique_number"),
        ]
