"""Drift alerts: one per episode of drift, delivered to a real HTTP receiver on loopback,
signed, retried with capped exponential backoff, every attempt recorded; and the URLs
the service refuses to call."""

import socket
from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings
from structlog.testing import capture_logs

from common import url_safety
from monitoring import services
from monitoring.models import AlertState, DeliveryState, DriftAlert, DriftReport, WebhookAttempt, WebhookDelivery
from monitoring.policy import DriftPolicy
from tests.monitoring.conftest import WEBHOOK_SECRET, post_traffic, traffic

DAY0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=10)


def webhook_to(project, url):
    project.drift = {**project.drift, "webhook_url": url, "webhook_secret": WEBHOOK_SECRET}
    project.save()


def day(n: int) -> datetime:
    return DAY0 + timedelta(days=n)


def check_at(project, moment):
    return services.drift_check_run(project=project, now=moment)


@pytest.mark.django_db(transaction=True)
@override_settings(FLYWHEEL_WEBHOOK_ALLOW_LOOPBACK=True)
def test_an_episode_alerts_once_re_alerts_on_a_new_field_and_resolves(app_client, project, receiver):
    webhook_to(project, receiver.url)
    post_traffic(app_client, traffic(1000, seed=1, start=day(0), hours=6, prefix="ref"))
    services.reference_set_window(project=project, start=day(0), end=day(0) + timedelta(hours=6))
    episodes = [("drift", {"f1_shift": 1.5}), ("same", {"f1_shift": 1.5}), ("more", {"f1_shift": 1.5, "f0_shift": 1.5}),
                ("clean", {}), ("again", {"f1_shift": 1.5})]
    reports = {}
    with capture_logs() as logs:
        for n, (name, shift) in enumerate(episodes, start=1):
            post_traffic(app_client, traffic(400, seed=10 + n, start=day(n), hours=4, prefix=name, **shift))
            reports[name] = check_at(project, day(n) + timedelta(hours=5))

    assert [reports[k].drifted for k in ("drift", "same", "more", "clean", "again")] == [True, True, True, False, True]
    raised = [r.json()["alert"]["new_fields"] for r in receiver.requests]
    assert raised == [["f1"], ["f0"], ["f1"]]
    assert all(r.signature_valid() for r in receiver.requests)
    first, second = DriftAlert.objects.order_by("id")
    assert first.state == AlertState.RESOLVED and first.features == ["f1", "f0"]
    assert first.resolved_by_id == reports["clean"].pk and first.last_report_id == reports["clean"].pk
    assert second.state == AlertState.OPEN and second.opened_by_id == reports["again"].pk
    assert reports["same"].alert is None and reports["more"].alert == first
    # One structured event per alert raised (the suite logs at WARNING, where alerts are).
    assert [e["event"] for e in logs if e["event"].startswith("drift.")] == ["drift.alert"] * 3
    alert_event = next(e for e in logs if e["event"] == "drift.alert")
    assert alert_event["project"] == "digits" and alert_event["fields"] == ["f1"]
    assert WEBHOOK_SECRET not in repr(logs)


def test_a_check_of_an_old_window_does_not_alert(app_client, project):
    post_traffic(app_client, traffic(500, seed=2, start=day(0), hours=4, prefix="ref"))
    services.reference_set_window(project=project, start=day(0), end=day(0) + timedelta(hours=4))
    post_traffic(app_client, traffic(300, seed=3, start=day(1), hours=4, prefix="cur", f1_shift=2))
    report = services.drift_check_run(project=project, start=day(1), end=day(1) + timedelta(hours=4))
    assert report.drifted and report.alert is None and DriftAlert.objects.count() == 0


# --- Deliveries --------------------------------------------------------------------------------------


def make_delivery(project, url, now) -> WebhookDelivery:
    report = services.drift_check_run(project=project, now=now, sync=False)
    alert = DriftAlert.objects.create(project=project, features=["f1"], opened_by=report, last_report=report)
    return WebhookDelivery.objects.create(project=project, alert=alert, report=report, event="drift.detected", url=url,
                                          payload={"event": "drift.detected", "report": {"id": report.pk}},
                                          next_attempt_at=now)


@override_settings(FLYWHEEL_WEBHOOK_ALLOW_LOOPBACK=True)
def test_a_failing_receiver_is_retried_with_capped_exponential_backoff(project, receiver):
    webhook_to(project, receiver.url)
    now = datetime.now(UTC)
    receiver.statuses = [500, 503, 429]
    delivery = make_delivery(project, receiver.url, now)
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk, now=now).state == DeliveryState.PENDING
    delivery.refresh_from_db()
    assert delivery.next_attempt_at == now + timedelta(seconds=30)
    # Not due yet: nothing is sent.
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk, now=now + timedelta(seconds=29)) is None
    moment = now + timedelta(seconds=30)
    services.webhook_delivery_attempt(delivery_id=delivery.pk, now=moment)
    delivery.refresh_from_db()
    assert delivery.next_attempt_at == moment + timedelta(seconds=60)
    moment += timedelta(seconds=60)
    services.webhook_delivery_attempt(delivery_id=delivery.pk, now=moment)
    delivery.refresh_from_db()
    assert delivery.next_attempt_at == moment + timedelta(seconds=120)
    delivered = services.webhook_delivery_attempt(delivery_id=delivery.pk, now=moment + timedelta(seconds=120))
    assert delivered.state == DeliveryState.DELIVERED and delivered.attempts == 4
    attempts = list(WebhookAttempt.objects.filter(delivery=delivery).order_by("number"))
    assert [(a.number, a.status_code, a.succeeded) for a in attempts] == [
        (1, 500, False), (2, 503, False), (3, 429, False), (4, 200, True)]
    assert len({r.body for r in receiver.requests}) == 1, "every attempt sends the same event"
    assert len({r.headers["X-Flywheel-Delivery"] for r in receiver.requests}) == 1
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk, now=moment + timedelta(days=1)) is None


def test_backoff_doubles_up_to_an_hour():
    assert [services.webhook_backoff(n).total_seconds() for n in range(1, 10)] == [
        30, 60, 120, 240, 480, 960, 1920, 3600, 3600]


@override_settings(FLYWHEEL_WEBHOOK_ALLOW_LOOPBACK=True)
def test_a_receiver_that_keeps_failing_is_given_up_after_the_last_attempt(project, receiver):
    webhook_to(project, receiver.url)
    receiver.statuses = [502] * 20
    now = datetime.now(UTC)
    delivery = make_delivery(project, receiver.url, now)
    for _ in range(services.WEBHOOK_MAX_ATTEMPTS):
        now += timedelta(hours=2)
        services.webhook_delivery_attempt(delivery_id=delivery.pk, now=now)
    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.FAILED and delivery.attempts == services.WEBHOOK_MAX_ATTEMPTS
    assert len(receiver.requests) == services.WEBHOOK_MAX_ATTEMPTS
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk, now=now + timedelta(hours=2)) is None


@override_settings(FLYWHEEL_WEBHOOK_ALLOW_LOOPBACK=True)
def test_a_client_error_is_not_retried(project, receiver):
    webhook_to(project, receiver.url)
    receiver.statuses = [410]
    delivery = make_delivery(project, receiver.url, datetime.now(UTC))
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk).state == DeliveryState.FAILED
    assert WebhookAttempt.objects.get(delivery=delivery).error == "HTTP 410"


@override_settings(FLYWHEEL_WEBHOOK_ALLOW_LOOPBACK=True)
def test_an_unreachable_receiver_is_retried_and_the_error_recorded(project):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once we leave: nothing listens there
    url = f"http://127.0.0.1:{port}/hook"
    webhook_to(project, url)
    delivery = services.webhook_delivery_attempt(delivery_id=make_delivery(project, url, datetime.now(UTC)).pk)
    assert delivery.state == DeliveryState.PENDING and "ConnectionRefused" in delivery.last_error


def test_loopback_is_refused_when_the_setting_is_off_even_for_a_stored_url(project, receiver):
    webhook_to(project, receiver.url)  # stored while the setting was on
    delivery = make_delivery(project, receiver.url, datetime.now(UTC))
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk).state == DeliveryState.FAILED
    assert receiver.requests == []
    assert "Loopback" in WebhookAttempt.objects.get(delivery=delivery).error


@override_settings(FLYWHEEL_WEBHOOK_ALLOW_LOOPBACK=True)
def test_nothing_goes_out_unsigned(project, receiver):
    delivery = make_delivery(project, receiver.url, datetime.now(UTC))  # the policy has no secret
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk).state == DeliveryState.FAILED
    assert receiver.requests == [] and "webhook_secret" in WebhookAttempt.objects.get(delivery=delivery).error


# --- Which URLs may be called ------------------------------------------------------------------------


@pytest.mark.parametrize("url, reason", [
    ("http://alerts.example.com/hook", "https"),
    ("ftp://alerts.example.com/hook", "https"),
    ("https://user:secret@alerts.example.com/hook", "Credentials"),
    ("https:///hook", "no host"),
    ("https://127.0.0.1/hook", "Loopback"),
    ("http://localhost:8080/hook", "Loopback"),
    ("https://[::1]/hook", "Loopback"),
    ("https://alerts.example.com:99999/hook", "valid"),
])
def test_urls_that_are_refused_when_set(ops_client, project, url, reason):
    response = ops_client.patch("/api/v1/projects/digits/", {"drift": {
        "webhook_url": url, "webhook_secret": WEBHOOK_SECRET}}, format="json")
    assert response.status_code == 400
    assert reason in response.json()["error"]["fields"]["drift.webhook_url"][0]


@override_settings(FLYWHEEL_WEBHOOK_TRUSTED_HOSTS=["relay.internal"])
def test_a_trusted_host_may_be_plain_http_and_private(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [(0, 0, 0, "", ("10.1.2.3", 80))])
    target = url_safety.url_check("http://relay.internal/drift")
    assert url_safety.address_for(target) == "10.1.2.3"


@pytest.mark.parametrize("address", ["10.0.0.5", "192.168.1.1", "169.254.169.254", "127.0.0.1", "::1", "fd00::1",
                                     "0.0.0.0", "224.0.0.1"])
def test_a_public_name_resolving_to_a_private_address_is_refused(monkeypatch, address):
    # DNS is outside the system: an attacker's name may resolve anywhere.
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [(0, 0, 0, "", (address, 443))])
    with pytest.raises(url_safety.URLRefused, match="non-public"):
        url_safety.address_for(url_safety.url_check("https://alerts.example.com/hook"))


def test_the_secret_is_required_and_never_shown(ops_client, project):
    url = "https://alerts.example.com/hook"
    response = ops_client.patch("/api/v1/projects/digits/", {"drift": {"webhook_url": url}}, format="json")
    assert response.status_code == 400 and "drift.webhook_secret" in response.json()["error"]["fields"]
    response = ops_client.patch("/api/v1/projects/digits/", {"drift": {"webhook_secret": "short"}}, format="json")
    assert response.status_code == 400 and "drift.webhook_secret" in response.json()["error"]["fields"]
    secured = {"webhook_url": url, "webhook_secret": WEBHOOK_SECRET}
    response = ops_client.patch("/api/v1/projects/digits/", {"drift": secured}, format="json")
    assert response.status_code == 200 and response.json()["drift"]["webhook_secret"] == "********"
    # Sending back what was shown keeps the real secret.
    drift = {**response.json()["drift"], "psi_threshold": 0.2}
    assert ops_client.patch("/api/v1/projects/digits/", {"drift": drift}, format="json").status_code == 200
    project.refresh_from_db()
    assert project.drift["webhook_secret"] == WEBHOOK_SECRET and project.drift["psi_threshold"] == 0.2
    assert WEBHOOK_SECRET not in ops_client.get("/api/v1/projects/digits/").content.decode()


@pytest.mark.parametrize("drift, field", [
    ({"psi_threshold": 0}, "drift.psi_threshold"), ({"fdr": 0.9}, "drift.fdr"),
    ({"numeric_bins": 1}, "drift.numeric_bins"), ({"check_interval_minutes": 1}, "drift.check_interval_minutes"),
    ({"window_hours": "a day"}, "drift.window_hours"),
])
def test_a_bad_drift_policy_is_a_400(ops_client, project, drift, field):
    response = ops_client.patch("/api/v1/projects/digits/", {"drift": drift}, format="json")
    assert response.status_code == 400 and field in response.json()["error"]["fields"]


def test_the_policy_defaults_are_filled_in(project):
    assert DriftPolicy.from_dict(project.drift) == DriftPolicy()
    assert project.drift["psi_threshold"] == 0.1 and project.drift["webhook_secret"] == ""
    assert DriftReport.objects.count() == 0
