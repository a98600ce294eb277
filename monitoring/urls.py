"""API routes of monitoring, under /api/v1/."""

from django.urls import path

from monitoring import apis

urlpatterns = [
    path("projects/<slug:slug>/drift/reports/", apis.DriftReportListApi.as_view(), name="drift-report-list"),
    path("projects/<slug:slug>/drift/reports/<int:report_id>/", apis.DriftReportDetailApi.as_view(),
         name="drift-report-detail"),
    path("projects/<slug:slug>/drift/checks/", apis.DriftCheckApi.as_view(), name="drift-check"),
    path("projects/<slug:slug>/drift/reference/", apis.DriftReferenceApi.as_view(), name="drift-reference"),
    path("projects/<slug:slug>/drift/alerts/", apis.DriftAlertListApi.as_view(), name="drift-alert-list"),
]
