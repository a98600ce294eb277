"""Input and output shapes of the monitoring API (docs/api.md: Monitoring) and of a project's
drift policy."""

from datetime import timedelta

from rest_framework import serializers

from common import url_safety
from common.serializers import PolicySerializer
from monitoring import stats
from monitoring.policy import SECRET_MASK

MAX_WINDOW = timedelta(days=400)


class OnDriftPolicySerializer(PolicySerializer):
    boost_audit_rate = serializers.FloatField(
        min_value=0.0, max_value=1.0, required=False,
        help_text="Share of predictions drawn at random for labeling while an alert is open (0: no boost).")
    route_drifted = serializers.BooleanField(
        required=False, help_text="Route predictions in the regions that grew with reason drift, within the budget.")


class DriftPolicySerializer(PolicySerializer):
    numeric_statistic = serializers.ChoiceField(
        choices=[stats.WASSERSTEIN, stats.PSI], required=False,
        help_text="Effect size of numeric fields: wasserstein (in reference standard deviations) or psi.")
    wasserstein_threshold = serializers.FloatField(
        min_value=0.001, max_value=10, required=False,
        help_text="Wasserstein distance, in reference standard deviations, a numeric field must reach.")
    psi_threshold = serializers.FloatField(min_value=0.001, max_value=10, required=False,
                                           help_text="PSI a field must reach to count as a practical shift.")
    fdr = serializers.FloatField(min_value=0.0001, max_value=0.5, required=False,
                                 help_text="Benjamini-Hochberg false discovery rate across the fields of a check.")
    numeric_bins = serializers.IntegerField(min_value=2, max_value=50, required=False,
                                            help_text="Quantile bins a numeric reference is cut into.")
    multivariate = serializers.BooleanField(required=False,
                                            help_text="Judge joint drift of the numeric features too.")
    multivariate_threshold = serializers.FloatField(
        min_value=0.001, max_value=10, required=False,
        help_text="Relative change in mean PCA reconstruction error that counts as joint drift.")
    multivariate_alpha = serializers.FloatField(
        min_value=0.0001, max_value=0.2, required=False,
        help_text="Mann-Whitney level of the joint test: its false alarm rate on unchanged data.")
    multivariate_sample = serializers.IntegerField(
        min_value=500, max_value=20_000, required=False,
        help_text="Random rows of the window the joint statistic uses (the reference keeps 10,000).")
    min_count = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False,
                                         help_text="Fields with fewer values in the window are not judged.")
    schedule = serializers.BooleanField(required=False, help_text="Run checks on the beat schedule.")
    check_interval_minutes = serializers.IntegerField(min_value=5, max_value=7 * 24 * 60, required=False,
                                                      help_text="One scheduled check per interval (60: hourly).")
    window_hours = serializers.IntegerField(min_value=1, max_value=90 * 24, required=False,
                                            help_text="Hours a check looks back by default.")
    on_drift = OnDriftPolicySerializer(required=False, help_text="What the loop does while a drift alert is open.")
    accuracy_drop = serializers.FloatField(
        min_value=0.001, max_value=1.0, required=False,
        help_text="Fall in label-free estimated accuracy against the reference period that raises an alert.")
    webhook_url = serializers.CharField(allow_blank=True, max_length=url_safety.MAX_URL_CHARS, required=False,
                                        help_text="Where alerts are POSTed: https, or http to a trusted host.")
    webhook_secret = serializers.CharField(allow_blank=True, min_length=0, max_length=200, required=False,
                                           help_text="Shared secret the X-Flywheel-Signature HMAC is keyed with "
                                                     f"(at least 16 characters); shown as {SECRET_MASK}.")

    def validate_webhook_url(self, value):
        if value:
            try:
                url_safety.url_check(value)
            except url_safety.URLRefused as exc:
                raise serializers.ValidationError(str(exc)) from None
        return value

    def validate_webhook_secret(self, value):
        if value and value != SECRET_MASK and len(value) < 16:
            raise serializers.ValidationError("At least 16 characters.")
        return value


class WindowSerializer(serializers.Serializer):
    start = serializers.DateTimeField(required=False, help_text="Rounded down to the hour.")
    end = serializers.DateTimeField(required=False, help_text="Rounded up to the hour; default now.")

    def validate(self, attrs):
        start, end = attrs.get("start"), attrs.get("end")
        if start and end:
            if end <= start:
                raise serializers.ValidationError({"end": ["Must be after start."]})
            if end - start > MAX_WINDOW:
                raise serializers.ValidationError({"end": [f"A window spans at most {MAX_WINDOW.days} days."]})
        return attrs


class DriftCheckInputSerializer(WindowSerializer):
    """Optional window; without one, the last 24 hours (the policy's window_hours)."""


class ReferenceInputSerializer(WindowSerializer):
    dataset_version = serializers.IntegerField(min_value=1, required=False,
                                               help_text="Measure drift against this dataset version's rows.")
    note = serializers.CharField(max_length=500, required=False, allow_blank=True,
                                 help_text="Why the reference changed, for the record.")

    def validate(self, attrs):
        attrs = super().validate(attrs)
        window = "start" in attrs or "end" in attrs
        if "dataset_version" in attrs and window:
            raise serializers.ValidationError("Send either a window (start, end) or a dataset_version, not both.")
        if "dataset_version" not in attrs and not ("start" in attrs and "end" in attrs):
            raise serializers.ValidationError("Send a window (start and end) or a dataset_version.")
        return attrs


class WindowOutputSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    count = serializers.IntegerField(help_text="Predictions in the window.")


class FieldResultSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.ChoiceField(choices=["numeric", "categorical"])
    statistic = serializers.CharField(help_text="The effect size judged: wasserstein (in reference standard "
                                                "deviations) or psi.")
    value = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(allow_null=True, help_text="Of the test named in `test`, before correction.")
    p_value_adjusted = serializers.FloatField(allow_null=True, help_text="Benjamini-Hochberg adjusted.")
    test = serializers.ChoiceField(choices=["ks", "chi2"])
    threshold = serializers.FloatField(allow_null=True, help_text="Effect needed: the practical threshold, or "
                                                                  "the chance level for these sample sizes.")
    drifted = serializers.BooleanField()
    reason = serializers.CharField(help_text="drifted, below_threshold, not_significant, too_few, not_in_reference.")
    count = serializers.IntegerField()
    reference_count = serializers.IntegerField()
    statistics = serializers.DictField(child=serializers.FloatField(allow_null=True),
                                       help_text="psi, js_distance, chi2, chi2_p, ks, ks_p, wasserstein_normalized.")
    histogram = serializers.DictField(help_text="bins (labels), reference and current counts.")


class MultivariateResultSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="Always multivariate.")
    type = serializers.CharField(help_text="Always multivariate.")
    statistic = serializers.CharField(help_text="pca_reconstruction_error.")
    value = serializers.FloatField(allow_null=True,
                                   help_text="The window's mean reconstruction error over the reference's (1: same).")
    threshold = serializers.FloatField(help_text="How far from 1 the value must be.")
    p_value = serializers.FloatField(allow_null=True, help_text="Mann-Whitney, window vs held-out reference rows.")
    drifted = serializers.BooleanField()
    reason = serializers.CharField(help_text="drifted, below_threshold, not_significant, too_few, "
                                             "too_few_features.")
    features = serializers.ListField(child=serializers.CharField(), help_text="The numeric features it used.")
    reference_rows = serializers.IntegerField()
    current_rows = serializers.IntegerField()
    components = serializers.IntegerField(help_text="Principal components kept.")


class ReportSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    created_at = serializers.DateTimeField()
    trigger = serializers.CharField()
    window = serializers.SerializerMethodField()
    reference = serializers.DictField(source="reference_info")
    drifted = serializers.BooleanField()
    features = FieldResultSerializer(many=True)
    prediction = FieldResultSerializer()
    confidence = FieldResultSerializer(allow_null=True)
    multivariate = MultivariateResultSerializer(allow_null=True, help_text="Joint drift; null when the policy "
                                                                          "turns it off.")
    accuracy = serializers.JSONField(
        allow_null=True, help_text="The label-free estimated accuracy's drop from the reference period and its verdict "
                                   "against the policy's accuracy_drop; null when it cannot be told.")
    alerted = serializers.SerializerMethodField(help_text="This report raised an alert (a webhook, a log event).")
    alert_id = serializers.IntegerField(allow_null=True)
    duration_ms = serializers.FloatField()

    def get_window(self, report) -> WindowOutputSerializer:
        return {"start": report.window_start.isoformat(), "end": report.window_end.isoformat(),
                "count": report.window_count}

    def get_alerted(self, report) -> bool:
        return report.alert_id is not None


class ReferenceSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    kind = serializers.CharField()
    start = serializers.DateTimeField(source="window_start", allow_null=True)
    end = serializers.DateTimeField(source="window_end", allow_null=True)
    dataset_version = serializers.IntegerField(allow_null=True)
    model_version = serializers.CharField()
    count = serializers.IntegerField()
    note = serializers.CharField()
    set_by = serializers.CharField(source="set_by_name")
    set_at = serializers.DateTimeField(source="created_at")
    current = serializers.BooleanField(source="is_current")


class ReferenceStateSerializer(serializers.Serializer):
    current = ReferenceSerializer(allow_null=True, help_text="Null: checks compare with the preceding 7 days.")
    history = ReferenceSerializer(many=True, help_text="Every reference set, newest first.")


class WebhookAttemptSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    started_at = serializers.DateTimeField()
    duration_ms = serializers.FloatField()
    status_code = serializers.IntegerField(allow_null=True)
    error = serializers.CharField()
    succeeded = serializers.BooleanField()


class WebhookDeliverySerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    report_id = serializers.IntegerField()
    url = serializers.CharField()
    state = serializers.CharField()
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)
    attempt_log = WebhookAttemptSerializer(many=True, source="attempts_list")


class AlertSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    state = serializers.CharField()
    fields = serializers.ListField(child=serializers.CharField(), source="features")
    opened_at = serializers.DateTimeField(source="created_at")
    opened_by_report = serializers.IntegerField(source="opened_by_id")
    last_report = serializers.IntegerField(source="last_report_id")
    resolved_at = serializers.DateTimeField(allow_null=True)
    actions = serializers.JSONField(
        help_text="While open: boost_audit_rate, route_drifted and the regions that grew (the policy's on_drift).")
    deliveries = WebhookDeliverySerializer(many=True, source="deliveries_list")
