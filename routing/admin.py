"""Admin for the catalog and generation records."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from routing import health, services
from routing.models import Endpoint, Generation, Model, Provider, ProviderKey
from routing.selectors import byok_provider_list, endpoint_health_list
from switchyard.errors import SwitchyardError
from switchyard.money import PER_MILLION, from_units


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
        "circuit",
    ]
    list_filter = ["enabled", "provider", "quantization", "prompt_caching"]
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

    @admin.display(description="Circuit")
    def circuit(self, obj: Endpoint) -> str:
        return health.book.state(obj.pk).replace("_", "-")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra = {"health_url": reverse("admin:routing_endpoint_health"), **(extra_context or {})}
        return super().changelist_view(request, extra)

    def get_urls(self):  # type: ignore[no-untyped-def]
        return [
            path("health/", self.admin_site.admin_view(self.health_view), name="routing_endpoint_health"),
            path(
                "health/act/",
                self.admin_site.admin_view(require_POST(self.health_action)),
                name="routing_endpoint_health_act",
            ),
            *super().get_urls(),
        ]

    def health_view(self, request: HttpRequest) -> HttpResponse:
        """Provider and endpoint health with circuit states; one-click disable / enable / close."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Provider and endpoint health",
            "opts": self.model._meta,
            "providers": endpoint_health_list(),
            "can_change": self.has_change_permission(request),
            "threshold": health.threshold(),
            "cooldown": health.cooldown(),
        }
        return render(request, "admin/routing/health.html", context)

    def health_action(self, request: HttpRequest) -> HttpResponse:
        if not self.has_change_permission(request):
            raise PermissionDenied
        action = request.POST.get("action", "")
        target = request.POST.get("id", "")
        if not target.isdigit():
            messages.error(request, "Nothing selected.")
        elif action in ("disable_endpoint", "enable_endpoint", "reset_breaker"):
            endpoint = get_object_or_404(Endpoint.objects.select_related("model", "provider"), pk=int(target))
            if action == "reset_breaker":
                health.breaker_reset(endpoint.pk)
                messages.success(request, f"Closed the circuit of {endpoint}.")
            else:
                enabled = action == "enable_endpoint"
                services.endpoint_set_enabled(endpoint=endpoint, enabled=enabled)
                messages.success(request, f"{'Enabled' if enabled else 'Disabled'} {endpoint}.")
        elif action in ("disable_provider", "enable_provider"):
            provider = get_object_or_404(Provider, pk=int(target))
            enabled = action == "enable_provider"
            services.provider_set_enabled(provider=provider, enabled=enabled)
            messages.success(request, f"{'Enabled' if enabled else 'Disabled'} provider {provider.slug}.")
        else:
            messages.error(request, f"Unknown action {action!r}.")
        return HttpResponseRedirect(reverse("admin:routing_endpoint_health"))


class UnchargedFilter(admin.SimpleListFilter):
    """Generations whose provider reported more than the hold: the platform's loss (audit_books)."""

    title = "uncharged excess"
    parameter_name = "uncharged"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Provider reported more than the hold")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Generation]) -> QuerySet[Generation]:
        return queryset.filter(uncharged_units__gt=0) if self.value() == "yes" else queryset


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
        "uncharged",
        "latency_ms",
        "created_at",
    ]
    list_filter = ["status", "streamed", "cancelled", "is_byok", UnchargedFilter, "provider"]
    search_fields = ["id", "model", "organization__slug"]
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [f.name for f in Generation._meta.fields] + ["cost", "uncharged"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="Cost (USD)")
    def cost(self, obj: Generation) -> str:
        return f"{from_units(obj.cost_units).normalize():f}"

    @admin.display(description="Uncharged excess (USD)")
    def uncharged(self, obj: Generation) -> str:
        return f"{from_units(obj.uncharged_units).normalize():f}"


class ProviderKeyForm(forms.ModelForm):
    """The secret is write-only: typed in a password box that never renders a value, then encrypted."""

    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Write-only: stored encrypted, never shown again. Leave empty to keep the current key.",
    )

    class Meta:
        model = ProviderKey
        fields = ["organization", "provider", "allow_platform_fallback"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "provider" in self.fields:
            self.fields["provider"].queryset = byok_provider_list()  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("api_key"):
            try:
                data["api_key"] = services.provider_key_clean(data["api_key"])
            except SwitchyardError as exc:
                self.add_error("api_key", exc.message)
        elif self.instance.pk is None:
            self.add_error("api_key", "A new provider key needs the key itself.")
        return data


@admin.register(ProviderKey)
class ProviderKeyAdmin(admin.ModelAdmin):
    """BYOK keys: the ciphertext is never displayed, only the last four characters."""

    form = ProviderKeyForm
    list_display = [
        "organization",
        "provider",
        "masked",
        "allow_platform_fallback",
        "created_by",
        "updated_at",
    ]
    list_filter = ["provider", "allow_platform_fallback"]
    search_fields = ["organization__slug", "organization__name", "provider__slug"]
    list_select_related = ["organization", "provider", "created_by"]
    readonly_fields = ["masked", "created_by", "created_at", "updated_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        fixed = ["organization", "provider"] if obj is not None else []
        return fixed + self.readonly_fields

    @admin.display(description="Key")
    def masked(self, obj: ProviderKey) -> str:
        return obj.masked if obj.pk else "-"

    def save_model(self, request: HttpRequest, obj: ProviderKey, form: forms.ModelForm, change: bool) -> None:
        secret = form.cleaned_data.get("api_key")
        if secret:
            row = services.provider_key_save(
                organization=obj.organization,
                provider=obj.provider,
                api_key=secret,
                allow_platform_fallback=obj.allow_platform_fallback,
                user=request.user,
            )
            obj.pk, obj.last4, obj.encrypted_key = row.pk, row.last4, row.encrypted_key
        else:
            services.provider_key_set_fallback(
                provider_key=obj, allow_platform_fallback=obj.allow_platform_fallback
            )

    def delete_model(self, request: HttpRequest, obj: ProviderKey) -> None:
        services.provider_key_delete(provider_key=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for obj in queryset:
            services.provider_key_delete(provider_key=obj)
