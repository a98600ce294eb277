"""HTTP API of projects (docs/api.md: Projects): create, read, change, and the flywheel at
a glance. Thin: validate, call one service or selector, serialize."""


import structlog
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import roles
from accounts.permissions import role_in
from accounts.selectors import project_get_for_user, projects_for_user
from flywheel import projects as services
from flywheel import selectors
from flywheel.serializers import (
    ProjectInputSerializer,
    ProjectSerializer,
    ProjectUpdateSerializer,
    StatsQuerySerializer,
)

log = structlog.get_logger(__name__)


class ProjectListApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.MANAGE, safe_roles=roles.ANYONE_SIGNED_IN)]

    @extend_schema(responses=ProjectSerializer(many=True), summary="Projects you are a member of")
    def get(self, request):
        projects = projects_for_user(request.user).order_by("slug")
        return Response(ProjectSerializer(projects, many=True).data)

    @extend_schema(request=ProjectInputSerializer, responses={201: ProjectSerializer}, summary="Create a project")
    def post(self, request):
        serializer = ProjectInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        project = services.project_create(
            slug=data["slug"], name=data["name"], labels=data["labels"], features=data.get("features"),
            routing_policy=data.get("routing"), retraining=data.get("retraining"), drift=data.get("drift"),
            feedback=data.get("feedback"), slices=data.get("slices"), labeling=data.get("labeling"),
            retention=data.get("retention"), actor=request.user,
        )
        return Response(ProjectSerializer(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.MANAGE, safe_roles=roles.ANYONE_SIGNED_IN)]

    @extend_schema(responses=ProjectSerializer, summary="One project")
    def get(self, request, slug):
        return Response(ProjectSerializer(project_get_for_user(user=request.user, slug=slug)).data)

    @extend_schema(request=ProjectUpdateSerializer, responses=ProjectSerializer, summary="Change a project")
    def patch(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        serializer = ProjectUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        project = services.project_update(project=project, changes=serializer.validated_data, actor=request.user)
        return Response(ProjectSerializer(project).data)


class ProjectStatsApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.OBSERVE)]

    @extend_schema(parameters=[StatsQuerySerializer], responses=OpenApiTypes.OBJECT,
                   summary="Queue depth, labels per day, annotators and their agreement")
    def get(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        query = StatsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(selectors.project_stats(project=project, accuracy_by=query.validated_data.get("accuracy_by")))
