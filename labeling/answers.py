"""What the two calls an annotator makes per task answer: claim the next task, and annotate
the one held. Shared by the DRF views (labeling.apis: session logins, WSGI) and the ASGI
gateway (labeling.gateway: API tokens), so both give the same checks, errors and bodies."""

from collections.abc import Callable

from accounts.selectors import project_get_for_user, user_is_member
from common.errors import NotFound
from labeling import selectors, services
from labeling.serializers import AnnotationInputSerializer, LabelSerializer, TaskSerializer


def task_for(user, task_id: int):
    """A task of a project the user belongs to; any other task is a 404."""
    task = selectors.task_get(task_id)
    if not user_is_member(user=user, project_id=task.project_id):
        raise NotFound("task_not_found", f"No task {task_id}.")
    return task


def task_access_check(user, task_id: int) -> None:
    """The same 404 as task_for, in one query, for endpoints whose service loads the task."""
    if not selectors.task_visible_to(task_id=task_id, user=user):
        raise NotFound("task_not_found", f"No task {task_id}.")


def claim_answer(*, user, slug: str) -> dict | None:
    """The claimed task as the API shows it; None when there is nothing to do (204)."""
    project = project_get_for_user(user=user, slug=slug)
    task = services.task_claim(project=project, user=user)
    return None if task is None else {"task": TaskSerializer(task).data}


def annotation_answer(*, user, task_id: int, read_data: Callable[[], object]) -> dict:
    """The body is read only after the access check, as DRF reads it: a request for a task
    the caller cannot see is a 404 whatever its body."""
    task_access_check(user, task_id)
    valid = valid_input(AnnotationInputSerializer, read_data())
    outcome = services.annotation_submit(task_id=task_id, user=user, label=valid["label"],
                                         lead_time_s=valid.get("lead_time_s"))
    return {"task": {"id": outcome.task.pk, "status": outcome.task.status},
            "resolved_label": LabelSerializer(outcome.label).data if outcome.label else None}


def valid_input(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
