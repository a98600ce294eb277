"""HTTP API of the annotation queue (docs/api.md: Annotation queue). Thin: validate, call one
service or selector, serialize."""


from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import roles
from accounts.permissions import role_in
from accounts.selectors import project_get_for_user
from common.errors import NotFound
from labeling import answers, group_selectors, group_services, images, selectors, services
from labeling.models import TaskStatus
from labeling.serializers import (
    AnnotationInputSerializer,
    GoldInputSerializer,
    GroupAnnotationInputSerializer,
    GroupListItemSerializer,
    GroupListParams,
    GroupMergeInputSerializer,
    GroupSerializer,
    LabelSerializer,
    ReviewInputSerializer,
    SimilarParams,
    TaskListItemSerializer,
    TaskPredictionSerializer,
    TaskSerializer,
)

TaskEnvelope = inline_serializer("TaskEnvelope", {"task": TaskSerializer()})












class TaskNextApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.ANNOTATE)]

    @extend_schema(request=None, responses={200: TaskEnvelope, 204: OpenApiResponse(description="Nothing to do.")},
                   summary="Claim the most important open task under a lease")
    def post(self, request, slug):
        answer = answers.claim_answer(user=request.user, slug=slug)
        return Response(status=status.HTTP_204_NO_CONTENT) if answer is None else Response(answer)


MAX_TASK_OFFSET = 1_000_000_000


class _ListParams(serializers.Serializer):
    status = serializers.ChoiceField(choices=TaskStatus.choices, required=False)
    reason = serializers.CharField(max_length=32, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=500, default=100, help_text="At most 500.")
    # Bounded: PostgreSQL's OFFSET is a bigint, and a larger one was a 500, not an empty page.
    offset = serializers.IntegerField(min_value=0, max_value=MAX_TASK_OFFSET, default=0)


class TaskListApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.READ_TASKS)]

    @extend_schema(
        # The serializer that checks the query is also what the schema shows, bounds included.
        parameters=[_ListParams],
        responses=inline_serializer("TaskList", {"count": serializers.IntegerField(),
                                                 "results": TaskListItemSerializer(many=True)}),
        summary="The project's queue",
    )
    def get(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        params = _ListParams(data=request.query_params)
        params.is_valid(raise_exception=True)
        tasks = selectors.task_list(project_id=project.pk, status=params.validated_data.get("status"),
                                    reason=params.validated_data.get("reason"))
        offset, limit = params.validated_data["offset"], params.validated_data["limit"]
        return Response({"count": tasks.count(),
                         "results": TaskListItemSerializer(tasks[offset:offset + limit], many=True).data})


class AnnotatorMeApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.ANNOTATE)]

    @extend_schema(responses=OpenApiTypes.OBJECT, summary="The caller's counters: done today, queue, gold accuracy")
    def get(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        return Response(selectors.annotator_summary(project_id=project.pk, user=request.user))


class TaskHeartbeatApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.ANNOTATE)]

    @extend_schema(request=None,
                   responses=inline_serializer("Lease", {"lease_expires_at": serializers.DateTimeField()}),
                   summary="Extend the caller's lease")
    def post(self, request, task_id):
        answers.task_access_check(request.user, task_id)
        lease = services.lease_renew(task_id=task_id, user=request.user)
        return Response({"lease_expires_at": lease.expires_at})


class AnnotationCreateApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.ANNOTATE)]

    @extend_schema(request=AnnotationInputSerializer,
                   responses={201: inline_serializer("AnnotationResult", {
                       "task": inline_serializer("AnnotatedTask", {"id": serializers.IntegerField(),
                                                                   "status": serializers.CharField()}),
                       "resolved_label": LabelSerializer(allow_null=True)}),
                       409: OpenApiResponse(description="The caller no longer holds the lease.")},
                   summary="Label a task you hold")
    def post(self, request, task_id):
        return Response(answers.annotation_answer(user=request.user, task_id=task_id, read_data=lambda: request.data),
                        status=status.HTTP_201_CREATED)


class TaskSkipApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.ANNOTATE)]

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT, summary="Pass a task you hold back to the others")
    def post(self, request, task_id):
        answers.task_access_check(request.user, task_id)
        task = services.task_skip(task_id=task_id, user=request.user)
        return Response({"task": {"id": task.pk, "status": task.status}})


class TaskReleaseApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.ANNOTATE)]

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT,
                   summary="Give a held task back without a judgment (e.g. leaving the page)")
    def post(self, request, task_id):
        answers.task_access_check(request.user, task_id)
        task = services.task_release(task_id=task_id, user=request.user)
        return Response({"task": {"id": task_id, "status": task.status}})


class TaskUndoApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.ANNOTATE)]

    @extend_schema(request=None, responses={200: TaskEnvelope, 409: OpenApiResponse(description="Too late to undo.")},
                   summary="Take back your last annotation while the task is still yours")
    def post(self, request, task_id):
        answers.task_access_check(request.user, task_id)
        task = services.annotation_undo(task_id=task_id, user=request.user)
        return Response({"task": TaskSerializer(task).data})


class TaskReviewApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.REVIEW)]

    @extend_schema(request=ReviewInputSerializer, responses=OpenApiTypes.OBJECT,
                   summary="Accept a task's label or reject it back into the queue")
    def post(self, request, task_id):
        answers.task_access_check(request.user, task_id)
        data = answers.valid_input(ReviewInputSerializer, request.data)
        task = services.task_review(task_id=task_id, reviewer=request.user, verdict=data["verdict"],
                                    label=data.get("label"), reason=data["reason"])
        return Response({"task": {"id": task.pk, "status": task.status, "round": task.round}})


class TaskImageApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.READ_TASKS)]

    @extend_schema(responses={(200, "image/png"): OpenApiTypes.BINARY}, summary="The task's image, scaled for display")
    def get(self, request, task_id):
        task = answers.task_for(request.user, task_id)
        try:
            png = images.display_png(images.source_bytes(task.prediction.input))
        except images.ImageUnavailable as exc:
            raise NotFound("image_unavailable", str(exc)) from None
        response = HttpResponse(png, content_type="image/png")
        response["Cache-Control"] = "private, max-age=3600"
        return response


class GoldApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.MANAGE)]

    @extend_schema(responses=inline_serializer("GoldAnswer", {
        "prediction_id": serializers.CharField(), "label": serializers.CharField(),
        "created_at": serializers.DateTimeField()}, many=True), summary="The project's gold answers")
    def get(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        answers = project.gold_answers.select_related("prediction").order_by("id")
        return Response([{"prediction_id": g.prediction.external_id, "label": g.label, "created_at": g.created_at}
                         for g in answers])

    @extend_schema(request=GoldInputSerializer, responses={201: OpenApiTypes.OBJECT},
                   summary="Mark a prediction's right answer as known (a gold task)")
    def post(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        data = answers.valid_input(GoldInputSerializer, request.data)
        prediction = project.predictions.filter(external_id=data["prediction_id"]).first()
        if prediction is None:
            raise NotFound("prediction_not_found", f"No prediction '{data['prediction_id']}' in this project.")
        gold = services.gold_answer_set(project=project, prediction=prediction, label=data["label"],
                                        actor=request.user)
        return Response({"prediction_id": prediction.external_id, "label": gold.label}, status=201)




# --- Groups ---------------------------------------------------------------------------------------


def _group_access_check(user, group_id: int) -> None:
    if not group_selectors.group_visible_to(group_id=group_id, user=user):
        raise NotFound("group_not_found", f"No group {group_id}.")


def _group_body(group_id: int) -> dict:
    return GroupSerializer(group_selectors.group_with_members(group_id)).data


GroupEnvelope = inline_serializer("GroupEnvelope", {"group": GroupSerializer()})


class GroupBuildApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.REVIEW)]

    @extend_schema(request=None, responses=inline_serializer("GroupBuild", {
        "groups": serializers.IntegerField(), "grouped_tasks": serializers.IntegerField(),
        "ungrouped_tasks": serializers.IntegerField()}), summary="Regroup the open tasks now")
    def post(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        result = group_services.groups_build(project=project)
        return Response({"groups": result.groups, "grouped_tasks": result.grouped_tasks,
                         "ungrouped_tasks": result.ungrouped_tasks})


class GroupListApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.READ_TASKS)]

    @extend_schema(parameters=[GroupListParams], responses=inline_serializer("GroupList", {
        "count": serializers.IntegerField(), "results": GroupListItemSerializer(many=True)}),
        summary="The project's groups, most valuable first")
    def get(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        params = answers.valid_input(GroupListParams, request.query_params)
        groups = group_selectors.group_list(project_id=project.pk, status=params.get("status"))
        offset, limit = params["offset"], params["limit"]
        return Response({"count": groups.count(),
                         "results": GroupListItemSerializer(groups[offset:offset + limit], many=True).data})


class GroupNextApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.ANNOTATE)]

    @extend_schema(request=None, responses={200: GroupEnvelope, 204: OpenApiResponse(description="No open group.")},
                   summary="Claim the most valuable open group under a lease")
    def post(self, request, slug):
        project = project_get_for_user(user=request.user, slug=slug)
        group = group_services.group_claim(project=project, user=request.user)
        if group is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response({"group": _group_body(group.pk)})


class GroupHeartbeatApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.ANNOTATE)]

    @extend_schema(request=None,
                   responses=inline_serializer("GroupLease", {"lease_expires_at": serializers.DateTimeField()}),
                   summary="Extend the caller's lease on a group")
    def post(self, request, group_id):
        _group_access_check(request.user, group_id)
        group = group_services.group_lease_renew(group_id=group_id, user=request.user)
        return Response({"lease_expires_at": group.lease_expires_at})


class GroupReleaseApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.ANNOTATE)]

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT, summary="Give a held group back unlabeled")
    def post(self, request, group_id):
        _group_access_check(request.user, group_id)
        group = group_services.group_release(group_id=group_id, user=request.user)
        return Response({"group": {"id": group.pk, "status": group.status}})


class GroupAnnotationApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.ANNOTATE)]

    @extend_schema(request=GroupAnnotationInputSerializer,
                   responses={201: inline_serializer("GroupLabeled", {"labeled": serializers.IntegerField(),
                                                                      "returned": serializers.IntegerField()}),
                              409: OpenApiResponse(description="The caller no longer holds the group.")},
                   summary="Label a group you hold, members you exclude going back to the queue")
    def post(self, request, group_id):
        _group_access_check(request.user, group_id)
        data = answers.valid_input(GroupAnnotationInputSerializer, request.data)
        outcome = group_services.group_annotate(group_id=group_id, user=request.user, label=data["label"],
                                                exclude=data["exclude"], lead_time_s=data.get("lead_time_s"))
        return Response({"labeled": outcome.labeled, "returned": outcome.returned}, status=status.HTTP_201_CREATED)


class GroupSplitApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.ANNOTATE)]

    @extend_schema(request=None, responses={201: inline_serializer("GroupSplit", {
        "groups": GroupSerializer(many=True)})}, summary="Cut a group you hold in two by content")
    def post(self, request, group_id):
        _group_access_check(request.user, group_id)
        halves = group_services.group_split(group_id=group_id, user=request.user)
        return Response({"groups": [_group_body(g.pk) for g in halves]}, status=status.HTTP_201_CREATED)


class GroupMergeApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.ANNOTATE)]

    @extend_schema(request=GroupMergeInputSerializer, responses={200: GroupEnvelope},
                   summary="Fold another group into this one")
    def post(self, request, group_id):
        _group_access_check(request.user, group_id)
        data = answers.valid_input(GroupMergeInputSerializer, request.data)
        group = group_services.group_merge(group_id=group_id, other_id=data["with"], user=request.user)
        return Response({"group": _group_body(group.pk)})


class TaskSimilarApi(APIView):
    permission_classes = [IsAuthenticated, role_in(roles.READ_TASKS)]

    @extend_schema(parameters=[SimilarParams], responses=inline_serializer("SimilarTasks", {
        "results": inline_serializer("SimilarTask", {"task_id": serializers.IntegerField(),
                                                     "distance": serializers.FloatField(),
                                                     "prediction": TaskPredictionSerializer()}, many=True)}),
        summary="The open tasks most similar to this one")
    def get(self, request, task_id):
        task = answers.task_for(request.user, task_id)
        params = answers.valid_input(SimilarParams, request.query_params)
        found = group_selectors.tasks_similar(task=task, k=params["k"])
        return Response({"results": [
            {"task_id": s.task.pk, "distance": s.distance,
             "prediction": TaskPredictionSerializer(s.task.prediction, context={"task": s.task}).data}
            for s in found]})
