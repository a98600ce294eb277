"""Web sign-in: Django's login view with the lockout of accounts.forms."""

from django.contrib.auth import views as auth_views

from accounts.forms import LoginForm


class LoginView(auth_views.LoginView):
    authentication_form = LoginForm

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.locked_for:
            # 429 with Retry-After: scripts that guess passwords see they are throttled.
            response.status_code = 429
            response["Retry-After"] = str(form.locked_for)
        return response
