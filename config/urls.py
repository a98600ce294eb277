"""URL map: the API under /api/v1/, the web pages, and the service endpoints."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts.views import LoginView
from config import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics_view, name="metrics"),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/", include("flywheel.urls")),
    path("api/v1/", include("labeling.urls")),
    path("", include("labeling.web_urls")),
    path("api/v1/", include("monitoring.urls")),
    path("api/v1/", include("accounts.urls")),
    path("ops/", include("flywheel.page_urls")),
    path("ops/", include("monitoring.page_urls")),
    # One sign-in page for everyone: the admin's own would be a way around the lockout.
    path("admin/login/", RedirectView.as_view(url="/accounts/login/", query_string=True), name="admin-login"),
    path("admin/", admin.site.urls),
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]

handler404 = "config.views.not_found"
handler500 = "config.views.server_error"
