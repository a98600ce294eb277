"""HTTP API of training runs and the model registry (docs/api.md: Training). Thin: validate,
call one service or selector, serialize."""


import structlog
from django.http import HttpResponse
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
from flywheel.datasets import selectors as dataset_selectors
from flywheel.training import artifacts, external, registry, runs, selectors, shadow
from flywheel.training.serializers import (
    ModelVersionSerializer,
    PromotionInputSerializer,
    PromotionSerializer,
    ShadowComparisonSerializer,
    ShadowModelSerializer,
    TrainingCompleteInputSerializer,
    TrainingRunInputSerializer,
    TrainingRunSerializer,
)

log = structlog.get_logger(__name__)


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
        run = runs.training_run_request(project=project, trigger="manual", dataset_version=version,
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
        run = external.training_run_complete(run=run, model_version=data["model_version"],
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
        promotion = registry.model_promote(project=project, model_version=version, actor=request.user,
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
        promotion = registry.model_rollback(project=project, actor=request.user,
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
        content = artifacts.model_artifact_bytes(version)
        response = HttpResponse(content, content_type="application/octet-stream")
        response["X-Artifact-SHA256"] = version.artifact_sha256
        response["X-Artifact-Libraries"] = ", ".join(f"{k}=={v}" for k, v in sorted(version.libraries.items()))
        response["Content-Disposition"] = f'attachment; filename="{version.name}.pkl"'
        return response


class ModelShadowApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.MANAGE, safe_roles=roles.OBSERVE)]

    @extend_schema(responses=ShadowComparisonSerializer,
                   summary="Champion against this shadow model on live traffic, and the live gate's verdict")
    def get(self, request, slug, name):
        project = project_get_for_user(user=request.user, slug=slug)
        return Response(ShadowComparisonSerializer(selectors.shadow_comparison(project=project, name=name)).data)

    @extend_schema(request=PromotionInputSerializer, responses={201: ShadowModelSerializer},
                   summary="Put a model trained here in shadow: it scores every new prediction beside the champion")
    def post(self, request, slug, name):
        project = project_get_for_user(user=request.user, slug=slug)
        version = selectors.model_version_get(project=project, name=name)
        serializer = PromotionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        shadow_model = shadow.shadow_start(project=project, model_version=version, actor=request.user,
                                           reason=serializer.validated_data.get("reason", ""))
        return Response(ShadowModelSerializer(shadow_model).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=PromotionInputSerializer, responses=ShadowModelSerializer,
                   summary="Take a model out of shadow")
    def delete(self, request, slug, name):
        project = project_get_for_user(user=request.user, slug=slug)
        version = selectors.model_version_get(project=project, name=name)
        serializer = PromotionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        shadow_model = shadow.shadow_stop(project=project, model_version=version, actor=request.user,
                                          reason=serializer.validated_data.get("reason", ""))
        return Response(ShadowModelSerializer(shadow_model).data)
