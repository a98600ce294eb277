"""API shapes of accounts: tokens and the audit log."""

from django.utils import timezone
from rest_framework import serializers

from accounts.models import ApiToken, AuditEvent, Membership, TokenScope
from accounts.roles import MEMBER_ROLES


class TokenIssueInputSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, help_text="Whose token to create or rotate.")
    name = serializers.RegexField(r"^[-\w.]+$", max_length=64, required=False,
                                  help_text="Add a key with this name beside the account's others; without one, "
                                            "the account's default key is replaced. Letters, digits, - _ .")
    expires_at = serializers.DateTimeField(required=False, allow_null=True,
                                           help_text="When the key stops working (ISO 8601); empty: never.")
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=TokenScope.choices), required=False,
                                   max_length=len(TokenScope.values),
                                   help_text="Narrow the key: ingest, read; empty or absent: the account's rights.")

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("It is in the past.")
        return value


class TokenSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")
    role = serializers.SerializerMethodField()
    scopes = serializers.ListField(source="scope_list", child=serializers.CharField(),
                                   help_text="Empty: the account's full rights.")

    class Meta:
        model = ApiToken
        fields = ["id", "username", "role", "name", "prefix", "scopes", "created_at", "last_used_at", "expires_at"]

    def get_role(self, token) -> str | None:
        account = getattr(token.user, "account", None)
        return account.role if account else None


class TokenIssuedSerializer(TokenSerializer):
    token = serializers.CharField(source="secret", help_text="The new key; shown this once, never again.")

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "token"]


class TokenListQuerySerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, required=False, help_text="Only this account's keys.")


class AuditQuerySerializer(serializers.Serializer):
    action = serializers.CharField(max_length=64, required=False,
                                   help_text='One action (model.promote), or a prefix ending in "." (label.).')
    target = serializers.CharField(max_length=200, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=500, default=100)
    offset = serializers.IntegerField(min_value=0, default=0)


class AdminAuditQuerySerializer(AuditQuerySerializer):
    project = serializers.SlugField(required=False, help_text="Only this project's events.")


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_name", help_text='Who did it ("system" when nobody did).')
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)

    class Meta:
        model = AuditEvent
        fields = ["id", "created_at", "actor", "action", "project", "target", "details"]


class MemberInputSerializer(serializers.Serializer):
    username = serializers.RegexField(r"^[\w.@+-]+$", max_length=150,
                                      error_messages={"invalid": "Letters, digits and @ . + - _ only (no spaces)."},
                                      help_text="The account to add; made if it does not exist (without an API key). "
                                                "Letters, digits, @ . + - _")
    role = serializers.ChoiceField(choices=MEMBER_ROLES, help_text="The account's role, in every project it is in.")


class MemberRoleInputSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=MEMBER_ROLES, help_text="The account's new role, in every project.")


class MemberSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")
    role = serializers.CharField(source="user.account.role", default=None)
    member_since = serializers.DateTimeField(source="created_at")

    class Meta:
        model = Membership
        fields = ["username", "role", "member_since"]
