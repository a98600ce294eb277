"""Web pages of monitoring: the ops dashboard under /ops/."""

from django.urls import path

from monitoring import views

urlpatterns = [
    path("", views.ops_home, name="ops-home"),
    path("<slug:slug>/", views.ops_project, name="ops-project"),
    path("<slug:slug>/drift/", views.ops_drift, name="ops-drift"),
]
