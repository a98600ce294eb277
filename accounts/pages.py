"""Who may open the ops console's pages (/ops/...): ops and admins, on the projects they
are members of, by the same role table as the API. A page refused is a 403; a project the
person cannot see is a 404, as in the API."""

from django.core.exceptions import PermissionDenied
from django.http import Http404

from accounts import roles
from accounts.selectors import project_get_for_user, user_role
from common.errors import NotFound


def console_role_check(request, *, manage: bool = True) -> None:
    """Ops and admins only: reading needs OBSERVE, a write MANAGE."""
    if user_role(request.user) not in (roles.MANAGE if manage else roles.OBSERVE):
        raise PermissionDenied("The ops console is for ops and admins.")


def console_project(request, slug: str, *, manage: bool = False):
    """The project, if the person may open the console and is its member."""
    console_role_check(request, manage=manage)
    try:
        return project_get_for_user(user=request.user, slug=slug)
    except NotFound:
        raise Http404(f"No project '{slug}'.") from None
