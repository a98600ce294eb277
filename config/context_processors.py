"""What every page's header needs: the links the signed-in person's role can open."""

from accounts import roles
from accounts.models import Role
from accounts.selectors import user_role

# (label, path, the roles that may open it): the same table the views check.
AREAS = (
    ("Label", "/label/", roles.ANNOTATE),
    ("Review", "/review/", roles.REVIEW),
    ("Ops", "/ops/", roles.OBSERVE),
    ("Admin", "/admin/", frozenset({Role.ADMIN})),
)


def navigation(request) -> dict:
    """Only the areas the role may open: a link that leads to a 403 is a dead end."""
    user = getattr(request, "user", None)
    role = user_role(user) if user is not None else None
    path = request.path
    links = [{"label": label, "path": target, "active": path.startswith(target)}
             for label, target, allowed in AREAS if role in allowed]
    return {"nav_links": links, "user_role": role}
