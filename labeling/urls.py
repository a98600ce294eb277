from django.urls import path

from labeling import apis

urlpatterns = [
    path("projects/<slug:slug>/tasks/", apis.TaskListApi.as_view(), name="task-list"),
    path("projects/<slug:slug>/tasks/next/", apis.TaskNextApi.as_view(), name="task-next"),
    path("projects/<slug:slug>/annotators/me/", apis.AnnotatorMeApi.as_view(), name="annotator-me"),
    path("projects/<slug:slug>/gold/", apis.GoldApi.as_view(), name="gold"),
    path("projects/<slug:slug>/groups/", apis.GroupListApi.as_view(), name="group-list"),
    path("projects/<slug:slug>/groups/build/", apis.GroupBuildApi.as_view(), name="group-build"),
    path("projects/<slug:slug>/groups/next/", apis.GroupNextApi.as_view(), name="group-next"),
    path("groups/<int:group_id>/heartbeat/", apis.GroupHeartbeatApi.as_view(), name="group-heartbeat"),
    path("groups/<int:group_id>/release/", apis.GroupReleaseApi.as_view(), name="group-release"),
    path("groups/<int:group_id>/annotations/", apis.GroupAnnotationApi.as_view(), name="group-annotate"),
    path("groups/<int:group_id>/split/", apis.GroupSplitApi.as_view(), name="group-split"),
    path("groups/<int:group_id>/merge/", apis.GroupMergeApi.as_view(), name="group-merge"),
    path("tasks/<int:task_id>/similar/", apis.TaskSimilarApi.as_view(), name="task-similar"),
    path("tasks/<int:task_id>/heartbeat/", apis.TaskHeartbeatApi.as_view(), name="task-heartbeat"),
    path("tasks/<int:task_id>/annotations/", apis.AnnotationCreateApi.as_view(), name="task-annotate"),
    path("tasks/<int:task_id>/skip/", apis.TaskSkipApi.as_view(), name="task-skip"),
    path("tasks/<int:task_id>/release/", apis.TaskReleaseApi.as_view(), name="task-release"),
    path("tasks/<int:task_id>/undo/", apis.TaskUndoApi.as_view(), name="task-undo"),
    path("tasks/<int:task_id>/review/", apis.TaskReviewApi.as_view(), name="task-review"),
    path("tasks/<int:task_id>/image/", apis.TaskImageApi.as_view(), name="task-image"),
]
