"""Admin for users, organisations, memberships and API keys (secrets are never stored, so never shown)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts import services
from accounts.keys import key_cache_invalidate
from accounts.models import ApiKey, AuditAction, AuditEvent, Membership, Organization, User
from switchyard.money import from_units


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "name", "is_staff", "is_active", "date_joined"]
    search_fields = ["email", "name"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("name",)}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "balance", "flagged", "rate_limit_rpm", "rate_limit_tpm", "created_at"]
    list_filter = ["flagged"]
    search_fields = ["slug", "name"]
    readonly_fields = ["balance"]
    inlines = [MembershipInline]

    def save_model(self, request: HttpRequest, obj: Organization, form: object, change: bool) -> None:
        super().save_model(request, obj, form, change)
        # Rate limits (and routing defaults) ride along in cached key records: drop them after commit.
        transaction.on_commit(lambda: services.organization_keys_invalidate(organization=obj))

    @admin.display(description="Balance (USD)")
    def balance(self, obj: Organization) -> str:
        return f"{from_units(obj.balance_units):.6f}"


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "prefix",
        "organization",
        "disabled",
        "limit",
        "limit_reset",
        "expires_at",
        "last_used_at",
        "created_at",
    ]
    list_filter = ["disabled", "limit_reset"]
    search_fields = ["name", "prefix", "organization__slug"]
    readonly_fields = ["prefix", "key_hash", "last_used_at", "created_at", "deleted_at", "created_by"]
    fields = [
        "organization",
        "name",
        "prefix",
        "limit_units",
        "limit_reset",
        "rate_limit_rpm",
        "rate_limit_tpm",
        "expires_at",
        "disabled",
        "created_by",
        "created_at",
        "last_used_at",
        "deleted_at",
    ]
    actions = ["disable_keys", "enable_keys"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are created where the secret can be shown once (dashboard, create_api_key)

    @admin.display(description="Limit (USD)")
    def limit(self, obj: ApiKey) -> str:
        return "-" if obj.limit_units is None else f"{from_units(obj.limit_units):.2f}"

    @admin.action(description="Disable selected keys")
    def disable_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            services.api_key_set_disabled(key=key, disabled=True)
        self.message_user(request, f"Disabled {queryset.count()} key(s).", messages.SUCCESS)

    @admin.action(description="Enable selected keys")
    def enable_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            services.api_key_set_disabled(key=key, disabled=False)
        self.message_user(request, f"Enabled {queryset.count()} key(s).", messages.SUCCESS)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: object, change: bool) -> None:
        super().save_model(request, obj, form, change)

        changed = list(getattr(form, "changed_data", []))
        if change and changed:
            services.audit_record(
                action=AuditAction.KEY_UPDATED,
                organization=obj.organization_id,
                target=obj,
                metadata={"fields": changed, "via": "admin"},
            )

        # After commit, as the services do: dropping it earlier lets a concurrent lookup re-cache the old row.
        digest = obj.key_hash
        transaction.on_commit(lambda: key_cache_invalidate(digest))


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The audit log, read-only: nobody edits or deletes history, not even a superuser."""

    list_display = ["created_at", "action", "organization", "actor_email", "target_label", "ip_address"]
    list_filter = ["action"]
    search_fields = ["organization__slug", "actor_email", "target_label", "target_id"]
    date_hierarchy = "created_at"
    list_select_related = ["organization"]
    readonly_fields = [
        "created_at",
        "organization",
        "actor",
        "actor_email",
        "action",
        "target_type",
        "target_id",
        "target_label",
        "ip_address",
        "metadata",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
