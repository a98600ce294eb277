"""What the console's forms share: a form is checked by the API's own input serializer,
and its refusals (the serializer's, or the domain's) are shown next to the field with the
API's words. Nothing is stored from a form that failed."""

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import serializers

from accounts import roles
from accounts.selectors import project_get_for_user, user_role
from common.errors import DomainError, NotFound

# Field errors that belong to no single field go under this key, at the top of the form.
FORM = "non_field_errors"


def console_project(request, slug: str, *, manage: bool = False):
    """The project, for ops and admins who are its members (any other is a 404, as in the
    API); a write needs a managing role."""
    allowed = roles.MANAGE if manage else roles.OBSERVE
    if user_role(request.user) not in allowed:
        raise PermissionDenied("The ops console is for ops and admins.")
    try:
        return project_get_for_user(user=request.user, slug=slug)
    except NotFound:
        raise Http404(f"No project '{slug}'.") from None


def form_input(post, fields: tuple[str, ...]) -> dict:
    """The posted values the serializer reads; an empty box is a field left out, so the
    serializer's default applies as in an API call that omits it."""
    return {name: post[name] for name in fields if post.get(name, "") != ""}


def serializer_errors(serializer: serializers.Serializer) -> dict[str, list[str]]:
    return {field: [str(message) for message in messages] if isinstance(messages, list) else [str(messages)]
            for field, messages in serializer.errors.items()}


def domain_errors(exc: DomainError, *, field: str | None = None) -> dict[str, list[str]]:
    """The domain's refusal, under the fields it names, else under `field`, else the form."""
    if exc.fields:
        return {name: list(messages) for name, messages in exc.fields.items()}
    return {field or FORM: [exc.message]}

