"""The web sign-in form, with the lockout that makes guessing passwords slow."""

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm

from accounts import services
from accounts.models import Role
from accounts.selectors import login_lockout_seconds, user_role


def client_ip(request) -> str | None:
    """The address a request came from. Behind a TLS proxy every request comes from the
    proxy, so the last X-Forwarded-For entry (the one the proxy itself added) is used; the
    ones before it are the client's word and could be anything."""
    if settings.BEHIND_TLS_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
        if forwarded:
            return forwarded
    return request.META.get("REMOTE_ADDR") or None


class LoginForm(AuthenticationForm):
    error_messages = {
        **AuthenticationForm.error_messages,
        "locked": "Too many failed sign-ins. Wait %(minutes)s and try again.",
        "service_account": "This is an app's service account: it uses its API token, not the web pages.",
    }

    def __init__(self, request=None, *args, **kwargs):
        super().__init__(request, *args, **kwargs)
        self.locked_for = 0  # seconds; set when the sign-in was refused for the lockout

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        ip = client_ip(self.request) if self.request else None
        # Checked before the password, so a locked account cannot be opened even with the right one.
        self.locked_for = login_lockout_seconds(username=username, ip=ip)
        if self.locked_for:
            minutes = max(1, round(self.locked_for / 60))
            raise forms.ValidationError(self.error_messages["locked"], code="locked",
                                        params={"minutes": f"{minutes} minute{'s' if minutes != 1 else ''}"})
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            if username:
                services.login_failure_record(username=username, ip=ip)
            raise
        services.login_failures_clear(username=username)
        return cleaned

    def confirm_login_allowed(self, user):
        super().confirm_login_allowed(user)
        # Apps are services, not people: a session would let an app token's holder reach the
        # pages, and cookies are not how services authenticate.
        if user_role(user) == Role.APP:
            raise forms.ValidationError(self.error_messages["service_account"], code="service_account")
