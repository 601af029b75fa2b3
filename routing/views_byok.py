"""Dashboard pages for an organisation's own provider keys (BYOK): list, add or replace, fallback, delete.

A key is shown exactly never: the form's password box does not echo it back (not even after a
validation error), and afterwards only its last four characters appear. Everyone in the organisation
can see which providers have keys; only owners and admins can change them.
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from accounts.dashboard import DashboardRequest, dashboard_view, render_dashboard
from accounts.models import MANAGER_ROLES
from routing import selectors, services
from routing.models import Provider, ProviderKey
from switchyard.errors import SwitchyardError


class ProviderKeyForm(forms.Form):
    provider = forms.ModelChoiceField(
        queryset=Provider.objects.none(), label="Provider", empty_label="Choose a provider"
    )
    api_key = forms.CharField(
        label="API key",
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off", "spellcheck": "false"}),
        help_text="Stored encrypted. After saving you will only ever see its last four characters.",
    )
    allow_platform_fallback = forms.BooleanField(
        label="If this key fails (invalid, rate-limited, provider error), fall back to the platform's key "
        "at list price",
        required=False,
        initial=True,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["provider"]).queryset = selectors.byok_provider_list()


def _key_or_404(request: DashboardRequest, key_id: int) -> ProviderKey:
    row = selectors.provider_key_get(organization_id=request.org.pk, provider_key_id=key_id)
    if row is None:
        raise Http404
    return row


@dashboard_view()
def byok_keys(request: DashboardRequest) -> HttpResponse:
    """GET: the organisation's keys. POST (owners and admins): add a key, or replace a provider's key."""
    form = ProviderKeyForm(request.POST or None, initial={"allow_platform_fallback": True})
    if request.method == "POST":
        if request.membership.role not in MANAGER_ROLES:
            raise PermissionDenied("Only owners and admins can manage provider keys.")
        if form.is_valid():
            provider: Provider = form.cleaned_data["provider"]
            try:
                row = services.provider_key_save(
                    organization=request.org,
                    provider=provider,
                    api_key=form.cleaned_data["api_key"],
                    allow_platform_fallback=form.cleaned_data["allow_platform_fallback"],
                    user=request.user,
                )
            except SwitchyardError as exc:
                field = (exc.metadata or {}).get("field")
                form.add_error(field if field in form.fields else None, exc.message)
            else:
                messages.success(
                    request,
                    f"Saved your {provider.name} key ending in {row.last4}. It will not be shown again; "
                    f"requests to {provider.name} use it within seconds.",
                )
                return redirect("byok")
    rows = selectors.provider_key_list(organization_id=request.org.pk)
    return render_dashboard(
        request,
        "dashboard/byok.html",
        {
            "section": "byok",
            "form": form,
            "rows": rows,
            "fee_percent": settings.SWITCHYARD_BYOK_FEE_PERCENT.normalize(),
        },
        status=400 if form.errors else 200,
    )


@require_POST
@dashboard_view(manage=True)
def byok_key_action(request: DashboardRequest, key_id: int, action: str) -> HttpResponse:
    row = _key_or_404(request, key_id)
    name = row.provider.name
    if action == "delete":
        services.provider_key_delete(provider_key=row)
        messages.success(
            request, f"Deleted your {name} key. Requests to {name} use the platform's key again."
        )
    elif action in ("fallback-on", "fallback-off"):
        on = action == "fallback-on"
        services.provider_key_set_fallback(provider_key=row, allow_platform_fallback=on)
        messages.success(
            request,
            f"When your {name} key fails, requests now "
            + ("fall back to the platform's key." if on else "fail instead of using the platform's key."),
        )
    else:
        raise Http404
    return redirect("byok")
