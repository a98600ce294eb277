"""HTTP API of monitoring (docs/api.md: Monitoring). Thin: validate, call one service or
selector, serialize. Ops and admins only."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import roles
from accounts.permissions import role_in
from accounts.selectors import project_get_for_user
from common.errors import NotFound
from monitoring import hooks, selectors, services
from monitoring.models import CheckTrigger
from monitoring.serializers import (
    AlertSerializer,
    DriftCheckInputSerializer,
    ReferenceInputSerializer,
    ReferenceSerializer,
    ReferenceStateSerializer,
    ReportSerializer,
)

MAX_LIMIT = 100


class _LimitSerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=MAX_LIMIT, default=20,
                                     help_text=f"How many, newest first (1-{MAX_LIMIT}, default 20).")


def _limit(request) -> int:
    serializer = _LimitSerializer(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data["limit"]


# The serializer that checks the query is also what the schema shows, bounds included.
LIMIT_PARAMETER = _LimitSerializer


class DriftReportListApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.OBSERVE)]

    @extend_schema(parameters=[LIMIT_PARAMETER], responses=ReportSerializer(many=True),
                   summary="Drift reports, newest first")
    def get(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        reports = selectors.reports_list(project=project, limit=_limit(request))
        return Response(ReportSerializer(reports, many=True).data)


class DriftReportDetailApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.OBSERVE)]

    @extend_schema(responses=ReportSerializer, summary="One drift report")
    def get(self, request, slug, report_id):
        project = project_get_for_user(user=request.user, slug=slug)
        report = selectors.report_get(project=project, report_id=report_id)
        if report is None:
            raise NotFound("report_not_found", f"No drift report {report_id} in project '{slug}'.")
        return Response(ReportSerializer(report).data)


class DriftCheckApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.OBSERVE)]

    @extend_schema(request=DriftCheckInputSerializer, responses={201: ReportSerializer},
                   summary="Run a drift check now (default window: the last 24 hours)")
    def post(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        serializer = DriftCheckInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        report = services.drift_check_run(project=project, start=serializer.validated_data.get("start"),
                                          end=serializer.validated_data.get("end"), trigger=CheckTrigger.ON_DEMAND,
                                          actor=request.user)
        return Response(ReportSerializer(report).data, status=status.HTTP_201_CREATED)


class DriftReferenceApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.MANAGE, safe_roles=roles.OBSERVE)]

    @extend_schema(responses=ReferenceStateSerializer, summary="The current drift reference and its history")
    def get(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        return Response(ReferenceStateSerializer({
            "current": selectors.reference_current(project=project),
            "history": selectors.reference_history(project=project),
        }).data)

    @extend_schema(request=ReferenceInputSerializer, responses=ReferenceSerializer,
                   summary="Set what drift is measured against: a window, or a dataset version")
    def put(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        serializer = ReferenceInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if "dataset_version" in data:
            reference = hooks.reference_from_dataset_version(project=project, dataset_version=data["dataset_version"],
                                                             actor=request.user)
        else:
            reference = services.reference_set_window(project=project, start=data["start"], end=data["end"],
                                                      actor=request.user, note=data.get("note", ""))
        return Response(ReferenceSerializer(reference).data)


class DriftAlertListApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.OBSERVE)]

    @extend_schema(parameters=[LIMIT_PARAMETER], responses=AlertSerializer(many=True),
                   summary="Drift alerts with their webhook deliveries and every attempt")
    def get(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        return Response(AlertSerializer(selectors.alerts_list(project=project, limit=_limit(request)),
                                        many=True).data)
