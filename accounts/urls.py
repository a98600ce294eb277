"""API routes of accounts, under /api/v1/."""

from django.urls import path

from accounts import apis

urlpatterns = [
    path("accounts/tokens/", apis.TokenListApi.as_view(), name="token-list"),
    path("accounts/tokens/id/<int:token_id>/", apis.TokenByIdApi.as_view(), name="token-by-id"),
    path("accounts/tokens/<str:username>/", apis.TokenDetailApi.as_view(), name="token-detail"),
    path("audit/", apis.AuditApi.as_view(), name="audit"),
    path("projects/<slug:slug>/members/", apis.ProjectMembersApi.as_view(), name="project-members"),
    path("projects/<slug:slug>/members/<str:username>/", apis.ProjectMemberApi.as_view(), name="project-member"),
    path("projects/<slug:slug>/audit/", apis.ProjectAuditApi.as_view(), name="project-audit"),
]
