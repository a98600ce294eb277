"""HTTP API of dataset versions (docs/api.md: Datasets). Thin: validate, call one service or
selector, serialize."""

from contextlib import contextmanager

import structlog
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import roles
from accounts.permissions import role_in
from accounts.selectors import project_get_for_user
from common.errors import DomainError
from common.storage import StorageError
from flywheel.datasets import selectors as dataset_selectors
from flywheel.datasets import services as datasets
from flywheel.datasets.serializers import (
    EXPORT_CONTENT_TYPES,
    DatasetCreateSerializer,
    DatasetDiffSerializer,
    DatasetVersionSerializer,
    DiffQuerySerializer,
    ExportQuerySerializer,
)
from flywheel.datasets.shards import ShardError

log = structlog.get_logger(__name__)


@contextmanager
def _dataset_errors():
    """A stored version that fails its hash check is the store's fault, not the caller's:
    502 with what was wrong (a store that cannot be reached is 503, in common.errors)."""
    try:
        yield
    except ShardError as exc:
        log.error("dataset.corrupt", error=str(exc)[:300])
        raise DomainError("dataset_corrupt", str(exc), status_code=502) from None


def _export_stream(chunks, *, project: str, version: int):
    """An export's bytes; a shard that turns out missing or corrupt halfway ends the stream
    (the status line is long gone), and is logged. Clients compare the row count with the
    X-Dataset-Rows header."""
    try:
        yield from chunks
    except (StorageError, ShardError) as exc:
        log.error("dataset.export_interrupted", project=project, version=version, error=str(exc)[:300])


class DatasetListApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.MANAGE, safe_roles=roles.OBSERVE)]

    @extend_schema(responses=DatasetVersionSerializer(many=True), summary="Dataset versions, newest first")
    def get(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        versions = dataset_selectors.dataset_versions(project=project)
        return Response(DatasetVersionSerializer(versions, many=True).data)

    @extend_schema(request=DatasetCreateSerializer, responses={202: DatasetVersionSerializer},
                   summary="Make a new dataset version from every prediction with a resolved label")
    def post(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        serializer = DatasetCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        version = datasets.dataset_version_create(project=project, note=serializer.validated_data["note"],
                                                  actor=request.user)
        version = dataset_selectors.dataset_version_get(project=project, number=version.number)
        return Response(DatasetVersionSerializer(version).data, status=status.HTTP_202_ACCEPTED)


class DatasetDetailApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.OBSERVE)]

    @extend_schema(responses=DatasetVersionSerializer, summary="One dataset version, with its build progress")
    def get(self, request, slug, version):
        project = project_get_for_user(user=request.user, slug=slug)
        return Response(DatasetVersionSerializer(
            dataset_selectors.dataset_version_get(project=project, number=version)).data)


class DatasetRetryApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.MANAGE)]

    @extend_schema(request=None, responses={202: DatasetVersionSerializer},
                   summary="Build a failed dataset version again (409 if it is ready or being built)")
    def post(self, request, slug, version):
        project = project_get_for_user(user=request.user, slug=slug)
        found = dataset_selectors.dataset_version_get(project=project, number=version)
        datasets.dataset_version_retry(version=found, actor=request.user)
        found = dataset_selectors.dataset_version_get(project=project, number=version)
        return Response(DatasetVersionSerializer(found).data, status=status.HTTP_202_ACCEPTED)


class DatasetDiffApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.OBSERVE)]

    @extend_schema(parameters=[DiffQuerySerializer], responses=DatasetDiffSerializer,
                   summary="Rows added, removed and relabeled from version a to version b")
    def get(self, request, slug, a, b):
        project = project_get_for_user(user=request.user, slug=slug)
        query = DiffQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        with _dataset_errors():
            diff = dataset_selectors.dataset_diff(project=project, a=a, b=b, examples=query.validated_data["examples"])
        return Response(diff)


class DatasetExportApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.OBSERVE)]

    @extend_schema(parameters=[ExportQuerySerializer],
                   responses={(200, "application/x-ndjson"): OpenApiTypes.STR, (200, "text/csv"): OpenApiTypes.STR},
                   summary="A ready version's rows as JSON lines or CSV, streamed (every shard verified)")
    def get(self, request, slug, version, fmt):
        project = project_get_for_user(user=request.user, slug=slug)
        query = ExportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        split = query.validated_data.get("split")
        found = dataset_selectors.dataset_version_ready(project=project, number=version)
        with _dataset_errors():
            chunks = dataset_selectors.dataset_export(version=found, fmt=fmt, split=split)
        response = StreamingHttpResponse(_export_stream(chunks, project=slug, version=version),
                                         content_type=EXPORT_CONTENT_TYPES[fmt])
        name = f"{slug}-v{version}{'-' + split if split else ''}.{fmt}"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        counts = found.counts or {}
        rows = counts.get("by_split", {}).get(split) if split else counts.get("rows")
        if rows is not None:
            response["X-Dataset-Rows"] = str(rows)
        return response
