"""HTTP API of ingestion (docs/api.md: Predictions, Feedback). Thin: validate, call one
service or selector, serialize."""

import time

import structlog
from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import roles
from accounts.permissions import role_in
from accounts.selectors import project_get_for_user
from flywheel.ingest import selectors, services, shadow
from flywheel.ingest.serializers import (
    FeedbackBatchInputDoc,
    FeedbackInputDoc,
    FeedbackInputSerializer,
    FeedbackResultSerializer,
    IngestResultSerializer,
    PredictionBatchInputDoc,
    PredictionDetailSerializer,
    PredictionInputDoc,
    PredictionsInputSerializer,
    ShadowIngestResultSerializer,
    ShadowPredictionBatchInputDoc,
    ShadowPredictionInputDoc,
    ShadowPredictionsInputSerializer,
)

log = structlog.get_logger(__name__)


class PredictionListApi(APIView):
    """Served by Django for session logins and under WSGI; in production (ASGI) token
    requests to this path are answered by flywheel.gateway with the same validation,
    service and error body."""

    permission_classes = [IsAuthenticated, role_in(roles.INGEST)]
    token_ingest_methods = frozenset({"POST"})  # what a key with the ingest scope may do here

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
        services.ingest_metrics_record(project=project, result=result, batch=batch, size=len(items), started=started)
        return Response(result.as_body(), status=status.HTTP_201_CREATED)


class PredictionDetailApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.READ_PREDICTIONS)]

    @extend_schema(responses={200: PredictionDetailSerializer, 410: OpenApiResponse(
        description="Archived by retention and removed: error code archived, details.archive names its part.")},
        summary="A prediction with its task, label and feedback")
    def get(self, request, slug, prediction_id):
        project = project_get_for_user(user=request.user, slug=slug)
        prediction = selectors.prediction_detail(project=project, external_id=prediction_id)
        return Response(PredictionDetailSerializer(prediction).data)


class FeedbackListApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.INGEST)]
    token_ingest_methods = frozenset({"POST"})  # what a key with the ingest scope may do here

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


class ShadowPredictionListApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.INGEST)]
    token_ingest_methods = frozenset({"POST"})  # what a key with the ingest scope may do here

    @extend_schema(
        request=PolymorphicProxySerializer(component_name="ShadowPredictionOrBatch",
                                           serializers=[ShadowPredictionInputDoc, ShadowPredictionBatchInputDoc],
                                           resource_type_field_name=None),
        responses={201: ShadowIngestResultSerializer},
        summary="Log a challenger's answers for served predictions; disagreements are routed",
    )
    def post(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        serializer = ShadowPredictionsInputSerializer(project=project, data=request.data)
        serializer.is_valid(raise_exception=True)
        items, batch = serializer.validated_data
        result = shadow.shadow_predictions_ingest(project=project, items=items, batch=batch)
        return Response(result.as_body(), status=status.HTTP_201_CREATED)
