"""Web pages of flywheel: the console's training page under /ops/<slug>/."""

from django.urls import path

from accounts import pages as account_pages
from flywheel import views

urlpatterns = [
    path("<slug:slug>/training/", views.training, name="console-training"),
    path("<slug:slug>/models/rollback/", views.model_rollback, name="console-model-rollback"),
    path("<slug:slug>/models/<str:name>/promote/", views.model_promote, name="console-model-promote"),
]
urlpatterns += [
    path("<slug:slug>/datasets/", views.datasets, name="console-datasets"),
]
urlpatterns += [
    path("projects/new/", views.project_new, name="console-project-new"),
    path("<slug:slug>/settings/", views.project_settings, name="console-settings"),
]
urlpatterns += [
    path("<slug:slug>/quality/", views.quality, name="console-quality"),
]
urlpatterns += [
    path("<slug:slug>/people/", account_pages.people, name="console-people"),
]
