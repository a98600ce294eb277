"""Who may open the ops console's pages (/ops/...): ops and admins, on the projects they
are members of, by the same role table as the API. A page refused is a 403; a project the
person cannot see is a 404, as in the API. And the console's People page, which is about
accounts: members, roles, API keys."""

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone

from accounts import roles, services
from accounts.models import Membership, Role, TokenScope
from accounts.selectors import project_get_for_user, project_members, token_get, user_role
from accounts.serializers import (
    MemberInputSerializer,
    MemberRoleInputSerializer,
    TokenIssuedSerializer,
    TokenIssueInputSerializer,
)
from common.errors import DomainError, NotFound
from common.forms import FORM, domain_errors, flat_errors, form_input


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


# --- People (/ops/<slug>/people/) -------------------------------------------------------------

EXPIRING_WITHIN = timedelta(days=7)


def _people_page(request, project, *, errors=None, values=None, issued=None, status=200):
    is_admin = user_role(request.user) == Role.ADMIN
    soon = timezone.now() + EXPIRING_WITHIN
    members = list(project_members(project=project))
    for member in members:
        member.keys = list(member.user.api_tokens.all()) if is_admin else []
        for key in member.keys:
            key.expired = key.expires_at is not None and key.expires_at <= timezone.now()
            key.expiring = not key.expired and key.expires_at is not None and key.expires_at <= soon
    response = render(request, "accounts/people.html", {
        "project": project, "tab": "people", "members": members, "is_admin": is_admin,
        "roles": [(value, Role(value).label) for value in roles.MEMBER_ROLES],
        "scopes": TokenScope.choices, "errors": errors or {}, "values": values or {}, "issued": issued,
    }, status=status)
    response["Cache-Control"] = "no-store"  # a page that may carry a new key is never cached
    return response


def _member_add(request, project):
    values = form_input(request.POST, ("username", "role"))
    form = MemberInputSerializer(data=values)
    if not form.is_valid():
        return None, flat_errors(form.errors), values
    try:
        user, created = services.member_add(project=project, actor=request.user, **form.validated_data)
    except DomainError as exc:
        return None, domain_errors(exc, field="username"), values
    return (f"{user.username} is {'a new' if created else 'now a'} member of {project.name}, "
            f"as {form.validated_data['role']}."), None, values


def _role_set(request, project):
    values = form_input(request.POST, ("username", "role"))
    form = MemberRoleInputSerializer(data=values)
    if not form.is_valid():
        return None, flat_errors(form.errors), values
    try:
        user = services.member_role_set(project=project, username=values.get("username", ""), actor=request.user,
                                        role=form.validated_data["role"])
    except DomainError as exc:
        return None, domain_errors(exc, field="role"), values
    return f"{user.username} is now {form.validated_data['role']}.", None, values


def _member_remove(request, project):
    values = form_input(request.POST, ("username",))
    username = values.get("username", "")
    try:
        services.member_remove(project=project, username=username, actor=request.user)
    except DomainError as exc:
        return None, {"remove": [exc.message]}, values
    return f"{username} is no longer a member of {project.name}.", None, values


def _member_user(project, username: str):
    user = get_user_model().objects.filter(username=username, memberships__project=project).first()
    if user is None:
        raise DomainError("invalid", f"Invalid username: '{username}' is not a member of '{project.slug}'.",
                          fields={"username": [f"'{username}' is not a member of this project."]})
    return user


@login_required
def people(request, slug):
    """GET: the members, their roles and (admins) their API keys; POST `form=member` adds an
    account, `form=role` changes one's role, `form=remove` takes one off the project (ops,
    admin), `form=key` issues a key and shows
    it this once, `form=revoke` revokes one (admin, as the tokens API)."""
    project = console_project(request, slug, manage=request.method == "POST")
    if request.method != "POST":
        return _people_page(request, project)
    kind = request.POST.get("form", "")
    if kind in ("key", "revoke") and user_role(request.user) != Role.ADMIN:
        raise PermissionDenied("Only admins may issue or revoke API keys, as in the API.")
    if kind == "key":
        return _key_issue(request, project)
    if kind == "revoke":
        return _key_revoke(request, project)
    forms = {"member": _member_add, "role": _role_set, "remove": _member_remove}
    if kind not in forms:
        return _people_page(request, project, errors={FORM: [f"Unknown form '{kind}'."]}, status=400)
    done, errors, values = forms[kind](request, project)
    if errors:
        return _people_page(request, project, errors=errors, values={**values, "form": kind}, status=400)
    messages.success(request, done)
    return redirect("console-people", slug=project.slug)


def _key_issue(request, project):
    values = form_input(request.POST, ("username", "name", "expires_at"))
    data = {**values, "scopes": request.POST.getlist("scopes")}
    form = TokenIssueInputSerializer(data=data)
    page_values = {**values, "scopes": data["scopes"], "form": "key"}
    if not form.is_valid():
        errors = {}
        for path, reasons in flat_errors(form.errors).items():  # "scopes[1]" under the scopes boxes
            errors.setdefault(path.split("[")[0], []).extend(reasons)
        return _people_page(request, project, errors=errors, values=page_values, status=400)
    valid = form.validated_data
    try:
        user = _member_user(project, valid["username"])
        token = services.token_issue(user=user, actor=request.user, name=valid.get("name"),
                                     expires_at=valid.get("expires_at"), scopes=valid.get("scopes") or ())
    except DomainError as exc:
        return _people_page(request, project, errors=domain_errors(exc, field="name"), values=page_values,
                            status=400)
    # Rendered, not redirected: the key is on this answer only, never in the session or a message.
    return _people_page(request, project, issued=TokenIssuedSerializer(token).data, status=201)


def _key_revoke(request, project):
    try:
        token = token_get(token_id=int(request.POST.get("token", "")))
    except (ValueError, NotFound):
        token = None
    if token is None or not Membership.objects.filter(project=project, user_id=token.user_id).exists():
        messages.error(request, "No such API key among this project's members.")
    else:
        services.token_revoke_one(token=token, actor=request.user)
        messages.success(request, f"Key '{token.name}' ({token.prefix}…) of {token.user.username} is revoked.")
    return redirect("console-people", slug=project.slug)
