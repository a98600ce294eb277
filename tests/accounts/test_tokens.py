"""API tokens over the API: admins issue and rotate them, anyone revokes their own, and a
revoked token is refused at once."""

from accounts.models import AuditEvent, Role
from tests import factories


def test_admin_rotates_a_token_and_the_old_one_stops_working(project):
    _, admin_token = factories.user_with_role(Role.ADMIN)
    _, old = factories.user_with_role(Role.APP, project, username="checkout")
    admin = factories.api_client(admin_token)
    assert factories.api_client(old).get("/api/v1/projects/").status_code == 200

    response = admin.post("/api/v1/accounts/tokens/", {"username": "checkout"}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["username"] == "checkout" and body["role"] == "app" and body["token"] != old
    assert factories.api_client(old).get("/api/v1/projects/").status_code == 401
    assert factories.api_client(body["token"]).get("/api/v1/projects/").status_code == 200
    listed = admin.get("/api/v1/accounts/tokens/").json()
    assert {"username": "checkout", "role": "app"}.items() <= next(
        t for t in listed if t["username"] == "checkout").items()
    assert all("token" not in t for t in listed)  # keys are shown once, when issued
    event = AuditEvent.objects.get(action="token.rotate")
    assert event.target == "checkout" and event.actor.account.role == Role.ADMIN


def test_a_user_revokes_their_own_token_and_is_refused_at_once(project):
    user, token = factories.user_with_role(Role.ANNOTATOR, project)
    client = factories.api_client(token)

    assert client.delete(f"/api/v1/accounts/tokens/{user.username}/").status_code == 204

    again = client.get("/api/v1/projects/")
    assert again.status_code == 401 and again.json()["error"]["code"] == "not_authenticated"
    event = AuditEvent.objects.get(action="token.revoke")
    assert event.actor == user and event.target == user.username


def test_only_admins_revoke_others_and_unknown_users_are_404(project):
    _, annotator = factories.user_with_role(Role.ANNOTATOR, project)
    victim, victim_token = factories.user_with_role(Role.APP, project)
    _, admin_token = factories.user_with_role(Role.ADMIN)

    refused = factories.api_client(annotator).delete(f"/api/v1/accounts/tokens/{victim.username}/")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert factories.api_client(victim_token).get("/api/v1/projects/").status_code == 200

    admin = factories.api_client(admin_token)
    assert admin.delete(f"/api/v1/accounts/tokens/{victim.username}/").status_code == 204
    assert admin.delete(f"/api/v1/accounts/tokens/{victim.username}/").json()["error"]["code"] == "token_not_found"
    assert admin.delete("/api/v1/accounts/tokens/nobody/").status_code == 404
    bad = admin.post("/api/v1/accounts/tokens/", {}, format="json")
    assert bad.status_code == 400 and "username" in bad.json()["error"]["fields"]
    assert admin.post("/api/v1/accounts/tokens/", {"username": "nobody"}, format="json").status_code == 404
