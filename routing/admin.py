"""Admin for the catalog and generation records."""

from __future__ import annotations

from decimal import Decimal

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.money import PER_MILLION, from_units
from routing import services
from routing.models import Endpoint, Generation, Model, Provider


def _per_million(price: Decimal | None) -> str:
    return "-" if price is None else f"${(price * PER_MILLION).normalize():f}"


class EndpointInline(admin.TabularInline):
    model = Endpoint
    extra = 0
    fields = [
        "provider",
        "provider_model_id",
        "enabled",
        "price_prompt",
        "price_completion",
        "prompt_per_m",
        "completion_per_m",
        "context_length",
        "max_completion_tokens",
        "quantization",
    ]
    readonly_fields = ["prompt_per_m", "completion_per_m"]
    show_change_link = True

    @admin.display(description="Prompt / M")
    def prompt_per_m(self, obj: Endpoint) -> str:
        return _per_million(obj.price_prompt)

    @admin.display(description="Completion / M")
    def completion_per_m(self, obj: Endpoint) -> str:
        return _per_million(obj.price_completion)


class EnableActions:
    @admin.action(description="Enable selected")
    def enable(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set(request, queryset, True)

    @admin.action(description="Disable selected")
    def disable(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set(request, queryset, False)

    def _set(self, request: HttpRequest, queryset: QuerySet, enabled: bool) -> None:
        for obj in queryset:
            if isinstance(obj, Endpoint):
                services.endpoint_set_enabled(endpoint=obj, enabled=enabled)
            elif isinstance(obj, Provider):
                services.provider_set_enabled(provider=obj, enabled=enabled)
            else:
                obj.enabled = enabled
                obj.save(update_fields=["enabled", "updated_at"])
        self.message_user(  # type: ignore[attr-defined]
            request,
            f"{'Enabled' if enabled else 'Disabled'} {queryset.count()}.",  # type: ignore[attr-defined]
            messages.SUCCESS,
        )


@admin.register(Provider)
class ProviderAdmin(EnableActions, admin.ModelAdmin):
    list_display = ["slug", "name", "api_format", "base_url", "enabled", "endpoint_count"]
    list_filter = ["api_format", "enabled"]
    search_fields = ["slug", "name", "base_url"]
    actions = ["enable", "disable"]

    @admin.display(description="Endpoints")
    def endpoint_count(self, obj: Provider) -> int:
        return obj.endpoints.count()


@admin.register(Model)
class ModelAdmin(EnableActions, admin.ModelAdmin):
    list_display = ["slug", "name", "context_length", "enabled", "endpoint_count"]
    list_filter = ["enabled", "endpoints__provider"]
    search_fields = ["slug", "name", "description"]
    inlines = [EndpointInline]
    actions = ["enable", "disable"]

    @admin.display(description="Endpoints")
    def endpoint_count(self, obj: Model) -> int:
        return obj.endpoints.count()


@admin.register(Endpoint)
class EndpointAdmin(EnableActions, admin.ModelAdmin):
    list_display = [
        "model",
        "provider",
        "provider_model_id",
        "enabled",
        "prompt_per_m",
        "completion_per_m",
        "context_length",
        "quantization",
    ]
    list_filter = ["enabled", "provider", "quantization"]
    search_fields = ["model__slug", "provider__slug", "provider_model_id"]
    list_select_related = ["model", "provider"]
    readonly_fields = ["prompt_per_m", "completion_per_m", "cache_read_per_m"]
    actions = ["enable", "disable"]

    @admin.display(description="Prompt / M")
    def prompt_per_m(self, obj: Endpoint) -> str:
        return _per_million(obj.price_prompt)

    @admin.display(description="Completion / M")
    def completion_per_m(self, obj: Endpoint) -> str:
        return _per_million(obj.price_completion)

    @admin.display(description="Cache read / M")
    def cache_read_per_m(self, obj: Endpoint) -> str:
        return _per_million(obj.price_cache_read)


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "organization",
        "model",
        "provider",
        "status",
        "streamed",
        "tokens_prompt",
        "tokens_completion",
        "cost",
        "latency_ms",
        "created_at",
    ]
    list_filter = ["status", "streamed", "cancelled", "provider"]
    search_fields = ["id", "model", "organization__slug"]
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [f.name for f in Generation._meta.fields] + ["cost"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="Cost (USD)")
    def cost(self, obj: Generation) -> str:
        return f"{from_units(obj.cost_units).normalize():f}"
