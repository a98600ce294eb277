"""The Django admin's view of API keys: who holds which, never a secret (none is kept)."""

from django.contrib import admin
from rest_framework.authtoken.admin import TokenProxy

from accounts.models import ApiToken

# DRF's own token admin would make plain, unhashed keys that nothing accepts any more.
if admin.site.is_registered(TokenProxy):
    admin.site.unregister(TokenProxy)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("user", "name", "prefix", "scopes", "created_at", "expires_at", "last_used_at")
    search_fields = ("user__username", "name", "prefix")
    exclude = ("digest",)
    readonly_fields = ("user", "name", "prefix", "scopes", "created_at", "expires_at", "last_used_at",
                       "expiry_recorded")

    def has_add_permission(self, request):
        return False  # keys are made through the API or flywheel_user, which show the secret once
