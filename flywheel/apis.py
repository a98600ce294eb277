"""HTTP API of the flywheel app (API.md: Projects, Predictions). Thin: validate, call one
service or selector, serialize."""

import time
from contextlib import contextmanager

import structlog
from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import roles
from accounts.permissions import role_in
from accounts.selectors import project_get_for_user, projects_for_user
from common.errors import DomainError
from common.storage import StorageError
from flywheel import selectors, services
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
from flywheel.serializers import (
    FeedbackBatchInputDoc,
    FeedbackInputDoc,
    FeedbackInputSerializer,
    FeedbackResultSerializer,
    IngestResultSerializer,
    ModelVersionSerializer,
    PredictionBatchInputDoc,
    PredictionDetailSerializer,
    PredictionInputDoc,
    PredictionsInputSerializer,
    ProjectInputSerializer,
    ProjectSerializer,
    ProjectUpdateSerializer,
    PromotionInputSerializer,
    PromotionSerializer,
    TrainingCompleteInputSerializer,
    TrainingRunInputSerializer,
    TrainingRunSerializer,
)
from flywheel.training import runs as training
from monitoring import metrics

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
            actor=request.user,
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


def ingest_metrics_record(*, project, result: services.IngestResult, batch: bool, size: int, started: float) -> None:
    """Prometheus figures of one ingestion request (shared with flywheel.gateway)."""
    metrics.INGEST_SECONDS.labels("batch" if batch else "single").observe(time.perf_counter() - started)
    metrics.INGEST_BATCH_SIZE.observe(size)
    metrics.PREDICTIONS_INGESTED.labels(project.slug, "created").inc(result.created)
    if result.duplicates:
        metrics.PREDICTIONS_INGESTED.labels(project.slug, "duplicate").inc(result.duplicates)
    for reason, count in result.routed.items():
        metrics.PREDICTIONS_ROUTED.labels(project.slug, reason).inc(count)


def ingest_result_body(result: services.IngestResult) -> dict:
    return {"created": result.created, "duplicates": result.duplicates, "results": result.results}


class PredictionListApi(APIView):
    """Served by Django for session logins and under WSGI; in production (ASGI) token
    requests to this path are answered by flywheel.gateway with the same validation,
    service and error body."""

    permission_classes = [IsAuthenticated, role_in(roles.INGEST)]

    @extend_schema(
        request=PolymorphicProxySerializer(
            component_name="PredictionOrBatch", serializers=[PredictionInputDoc, PredictionBatchInputDoc],
            resource_type_field_name=None,
        ),
        responses={201: IngestResultSerializer},
        summary="Log one prediction or a batch of up to 10,000; each is routed in the same request",
    )
    def post(self, request, slug):
        started = time.perf_counter()
        project = project_get_for_user(user=request.user, slug=slug)
        serializer = PredictionsInputSerializer(project=project, data=request.data)
        serializer.is_valid(raise_exception=True)
        items, batch = serializer.validated_data
        result = services.predictions_ingest(project=project, items=items, batch=batch)
        ingest_metrics_record(project=project, result=result, batch=batch, size=len(items), started=started)
        return Response(ingest_result_body(result), status=status.HTTP_201_CREATED)


class PredictionDetailApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.READ_PREDICTIONS)]

    @extend_schema(responses=PredictionDetailSerializer, summary="A prediction with its task, label and feedback")
    def get(self, request, slug, prediction_id):
        project = project_get_for_user(user=request.user, slug=slug)
        prediction = selectors.prediction_detail(project=project, external_id=prediction_id)
        return Response(PredictionDetailSerializer(prediction).data)


class ProjectStatsApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.OBSERVE)]

    @extend_schema(responses=OpenApiTypes.OBJECT,
                   summary="Queue depth, labels per day, annotators and their agreement")
    def get(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        return Response(selectors.project_stats(project=project))


class FeedbackListApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.INGEST)]

    @extend_schema(
        request=PolymorphicProxySerializer(component_name="FeedbackOrBatch",
                                           serializers=[FeedbackInputDoc, FeedbackBatchInputDoc],
                                           resource_type_field_name=None),
        responses={201: FeedbackResultSerializer},
        summary="Record what end users did with predictions: confirm, correct or reject",
    )
    def post(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        serializer = FeedbackInputSerializer(project=project, data=request.data)
        serializer.is_valid(raise_exception=True)
        items, batch = serializer.validated_data
        result = services.feedback_ingest(project=project, items=items, batch=batch)
        return Response({"created": result.created, "duplicates": result.duplicates, "resolved": result.resolved,
                         "routed": result.routed}, status=status.HTTP_201_CREATED)


# --- Datasets (API.md: Datasets and training) ------------------------------------------------------


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


# --- Training runs and the model registry -----------------------------------------------------------


class TrainingRunListApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.MANAGE, safe_roles=roles.OBSERVE)]

    @extend_schema(responses=TrainingRunSerializer(many=True), summary="The project's training runs, newest first")
    def get(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        return Response(TrainingRunSerializer(selectors.training_runs(project=project), many=True).data)

    @extend_schema(request=TrainingRunInputSerializer, responses={202: TrainingRunSerializer},
                   summary="Retrain now: dataset, train, evaluate, gate, promote")
    def post(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        serializer = TrainingRunInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        number = serializer.validated_data.get("dataset_version")
        version = dataset_selectors.dataset_version_get(project=project, number=number) if number else None
        run = training.training_run_request(project=project, trigger="manual", dataset_version=version,
                                            actor=request.user)
        return Response(TrainingRunSerializer(selectors.training_run_get(project=project, number=run.number)).data,
                        status=status.HTTP_202_ACCEPTED)


class TrainingRunDetailApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.OBSERVE)]

    @extend_schema(responses=TrainingRunSerializer, summary="One training run, with its gate decision")
    def get(self, request, slug, run_id):
        project = project_get_for_user(user=request.user, slug=slug)
        run = selectors.training_run_by_id(project=project, run_id=run_id)
        return Response(TrainingRunSerializer(run).data)


class TrainingRunCompleteApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.MANAGE | roles.INGEST)]

    @extend_schema(request=TrainingCompleteInputSerializer, responses=TrainingRunSerializer,
                   summary="An external trainer reports the model it trained")
    def post(self, request, run_id):
        run = selectors.training_run_for_user(user=request.user, run_id=run_id)
        serializer = TrainingCompleteInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        run = training.training_run_complete(run=run, model_version=data["model_version"],
                                             artifact_uri=data["artifact_uri"], metrics=data["metrics"],
                                             predictions=data.get("predictions"), actor=request.user)
        return Response(TrainingRunSerializer(selectors.training_run_by_id(project=run.project, run_id=run.pk)).data)


class ModelListApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.OBSERVE)]

    @extend_schema(responses=ModelVersionSerializer(many=True), summary="The model registry: versions and aliases")
    def get(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        versions = selectors.model_versions(project=project)
        return Response(ModelVersionSerializer(versions, many=True).data)


class ModelPromoteApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.MANAGE)]

    @extend_schema(request=PromotionInputSerializer, responses=PromotionSerializer,
                   summary="Make a version the champion (a person's decision, logged)")
    def post(self, request, slug, name):
        project = project_get_for_user(user=request.user, slug=slug)
        version = selectors.model_version_get(project=project, name=name)
        serializer = PromotionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        promotion = training.model_promote(project=project, model_version=version, actor=request.user,
                                           reason=serializer.validated_data.get("reason", ""))
        if promotion is None:
            raise DomainError("already_champion", f"'{name}' is already the champion.", status_code=409)
        return Response(PromotionSerializer(promotion).data)


class ModelRollbackApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.MANAGE)]

    @extend_schema(request=PromotionInputSerializer, responses=PromotionSerializer,
                   summary="Put back the champion the current one replaced")
    def post(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        serializer = PromotionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        promotion = training.model_rollback(project=project, actor=request.user,
                                            reason=serializer.validated_data.get("reason", ""))
        return Response(PromotionSerializer(promotion).data)


class PromotionListApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.OBSERVE)]

    @extend_schema(responses=PromotionSerializer(many=True), summary="Champion changes, newest first")
    def get(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        return Response(PromotionSerializer(selectors.promotions(project=project), many=True).data)


class ModelArtifactApi(APIView):
    """Apps fetch the champion they should serve: the artifact's bytes, its SHA-256 and the
    libraries it needs to load."""

    permission_classes = [IsAuthenticated, role_in(roles.READ_PREDICTIONS)]

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
                   summary="A trained model's artifact")
    def get(self, request, slug, name):
        project = project_get_for_user(user=request.user, slug=slug)
        version = selectors.model_version_get(project=project, name=name)
        content = training.model_artifact_bytes(version)
        response = HttpResponse(content, content_type="application/octet-stream")
        response["X-Artifact-SHA256"] = version.artifact_sha256
        response["X-Artifact-Libraries"] = ", ".join(f"{k}=={v}" for k, v in sorted(version.libraries.items()))
        response["Content-Disposition"] = f'attachment; filename="{version.name}.pkl"'
        return response
