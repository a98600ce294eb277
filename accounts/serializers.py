"""API shapes of accounts: tokens and the audit log."""

from rest_framework import serializers

from accounts.models import AuditEvent


class TokenIssueInputSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, help_text="Whose token to create or rotate.")


class TokenSerializer(serializers.Serializer):
    username = serializers.CharField(source="user.username")
    role = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField(source="created")

    def get_role(self, token) -> str | None:
        account = getattr(token.user, "account", None)
        return account.role if account else None


class TokenIssuedSerializer(TokenSerializer):
    token = serializers.CharField(source="key", help_text="The new key; shown this once.")


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
