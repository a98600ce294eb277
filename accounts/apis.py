"""HTTP API of accounts: API tokens (issue, rotate, revoke) and the audit log, read-only.
Thin: validate, call one service or selector, serialize."""

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import roles, selectors, services
from accounts.models import Role
from accounts.permissions import role_in
from accounts.serializers import (
    AdminAuditQuerySerializer,
    AuditEventSerializer,
    AuditQuerySerializer,
    MemberInputSerializer,
    MemberRoleInputSerializer,
    MemberSerializer,
    TokenIssuedSerializer,
    TokenIssueInputSerializer,
    TokenListQuerySerializer,
    TokenSerializer,
)
from common.errors import NotFound

ADMIN = frozenset({Role.ADMIN})

AuditPage = inline_serializer("AuditPage", {"count": serializers.IntegerField(),
                                            "results": AuditEventSerializer(many=True)})


class TokenListApi(APIView):
    permission_classes = [IsAuthenticated, role_in(ADMIN)]

    @extend_schema(parameters=[TokenListQuerySerializer], responses=TokenSerializer(many=True),
                   summary="The API keys: name, prefix, scopes, last use, expiry (admin; never the keys)")
    def get(self, request):
        query = TokenListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        tokens = selectors.tokens_list(username=query.validated_data.get("username"))
        return Response(TokenSerializer(tokens, many=True).data)

    @extend_schema(request=TokenIssueInputSerializer, responses={201: TokenIssuedSerializer},
                   summary="Replace a user's default API key, or add a named one beside the others (admin)")
    def post(self, request):
        data = TokenIssueInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = selectors.user_get_by_username(data.validated_data["username"])
        token = services.token_issue(user=user, actor=request.user, name=data.validated_data.get("name"),
                                     expires_at=data.validated_data.get("expires_at"),
                                     scopes=data.validated_data.get("scopes") or ())
        return Response(TokenIssuedSerializer(token).data, status=status.HTTP_201_CREATED)


class TokenDetailApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={204: OpenApiResponse(description="Revoked")},
                   summary="Revoke all of a user's API keys (admin, or the user their own)")
    def delete(self, request, username):
        is_admin = selectors.user_role(request.user) == Role.ADMIN
        if not is_admin and username != request.user.get_username():
            raise PermissionDenied("Only admins may revoke another user's token.")
        user = selectors.user_get_by_username(username)
        if not services.token_revoke(user=user, actor=request.user):
            raise NotFound("token_not_found", f"'{username}' has no API token.")
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenByIdApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={204: OpenApiResponse(description="Revoked")},
                   summary="Revoke one API key, leaving the account's others (admin, or the user their own)")
    def delete(self, request, token_id):
        token = selectors.token_get(token_id=token_id)
        if selectors.user_role(request.user) != Role.ADMIN and token.user_id != request.user.pk:
            # Someone else's key is as unknown as one that does not exist.
            raise NotFound("token_not_found", f"No API token {token_id}.")
        services.token_revoke_one(token=token, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProjectMembersApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.MANAGE)]

    @extend_schema(responses=MemberSerializer(many=True), summary="The project's members and their roles (ops, admin)")
    def get(self, request, slug):
        project = selectors.project_get_for_user(user=request.user, slug=slug)
        return Response(MemberSerializer(selectors.project_members(project=project), many=True).data)

    @extend_schema(request=MemberInputSerializer, responses={201: MemberSerializer},
                   summary="Add an account to the project with a role, making it if new (ops, admin; "
                           "an admin's role only by an admin)")
    def post(self, request, slug):
        project = selectors.project_get_for_user(user=request.user, slug=slug)
        data = MemberInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user, _ = services.member_add(project=project, actor=request.user, **data.validated_data)
        return Response(MemberSerializer(selectors.project_members(project=project).get(user=user)).data,
                        status=status.HTTP_201_CREATED)


class ProjectMemberApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.MANAGE)]

    @extend_schema(request=MemberRoleInputSerializer, responses=MemberSerializer,
                   summary="Change a member's role (ops, admin; an admin's role only by an admin)")
    def patch(self, request, slug, username):
        project = selectors.project_get_for_user(user=request.user, slug=slug)
        data = MemberRoleInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.member_role_set(project=project, username=username, actor=request.user,
                                        role=data.validated_data["role"])
        return Response(MemberSerializer(selectors.project_members(project=project).get(user=user)).data)

    @extend_schema(responses={204: OpenApiResponse(description="Removed")},
                   summary="Take an account off the project; it keeps its role and keys (ops, admin; "
                           "an admin only by an admin; not yourself)")
    def delete(self, request, slug, username):
        project = selectors.project_get_for_user(user=request.user, slug=slug)
        services.member_remove(project=project, username=username, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _page(events, query) -> Response:
    offset, limit = query["offset"], query["limit"]
    return Response({"count": events.count(),
                     "results": AuditEventSerializer(events[offset:offset + limit], many=True).data})


class ProjectAuditApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.OBSERVE)]

    @extend_schema(parameters=[AuditQuerySerializer], responses=AuditPage,
                   summary="The project's audit log, newest first (ops, admin)")
    def get(self, request, slug):
        project = selectors.project_get_for_user(user=request.user, slug=slug)
        query = AuditQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        events = selectors.audit_events(project_id=project.pk, action=query.validated_data.get("action"),
                                        target=query.validated_data.get("target"))
        return _page(events, query.validated_data)


class AuditApi(APIView):
    permission_classes = [IsAuthenticated, role_in(ADMIN)]

    @extend_schema(parameters=[AdminAuditQuerySerializer], responses=AuditPage,
                   summary="The whole audit log, newest first, with account and token events (admin)")
    def get(self, request):
        query = AdminAuditQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        slug = query.validated_data.get("project")
        project = selectors.project_get_for_user(user=request.user, slug=slug) if slug else None
        events = selectors.audit_events(project_id=project.pk if project else None,
                                        action=query.validated_data.get("action"),
                                        target=query.validated_data.get("target"))
        return _page(events, query.validated_data)
