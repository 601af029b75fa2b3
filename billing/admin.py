"""Admin for the ledger (read-only) and holds; grants go through a service that records who granted."""

from __future__ import annotations

from decimal import InvalidOperation

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse

from accounts.models import Organization
from billing import services
from billing.models import Hold, LedgerEntry
from billing.money import from_units
from switchyard.errors import SwitchyardError


class GrantForm(forms.Form):
    organization = forms.ModelChoiceField(queryset=Organization.objects.all())
    amount = forms.DecimalField(max_digits=18, decimal_places=6, help_text="USD")
    kind = forms.ChoiceField(choices=[("grant", "Grant"), ("adjustment", "Adjustment (may be negative)")])
    reason = forms.CharField(max_length=300)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "organization", "kind", "amount", "reason", "source", "created_by"]
    list_filter = ["kind"]
    search_fields = ["organization__slug", "source", "reason"]
    date_hierarchy = "created_at"
    list_select_related = ["organization", "created_by"]
    change_list_template = "admin/billing/ledgerentry/change_list.html"

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [f.name for f in LedgerEntry._meta.fields] + ["amount"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="Amount (USD)")
    def amount(self, obj: LedgerEntry) -> str:
        return f"{from_units(obj.amount_units).normalize():f}"

    def get_urls(self):  # type: ignore[no-untyped-def]
        return [
            path("grant/", self.admin_site.admin_view(self.grant_view), name="billing_ledgerentry_grant"),
            *super().get_urls(),
        ]

    def grant_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("billing.view_ledgerentry") or not request.user.is_superuser:
            messages.error(request, "Only superusers can grant credits.")
            return HttpResponseRedirect(reverse("admin:billing_ledgerentry_changelist"))
        form = GrantForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                entry = services.credits_grant(
                    organization=form.cleaned_data["organization"],
                    amount_usd=form.cleaned_data["amount"],
                    reason=form.cleaned_data["reason"],
                    kind=form.cleaned_data["kind"],
                    created_by=request.user,  # type: ignore[arg-type]
                )
            except (SwitchyardError, InvalidOperation) as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(
                    request,
                    f"Recorded {entry.kind} of {from_units(entry.amount_units).normalize():f} "
                    f"USD for {entry.organization.slug}.",
                )
                return HttpResponseRedirect(reverse("admin:billing_ledgerentry_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "title": "Grant credits",
            "opts": self.model._meta,
        }
        return render(request, "admin/billing/grant.html", context)


@admin.register(Hold)
class HoldAdmin(admin.ModelAdmin):
    list_display = ["id", "organization", "amount", "status", "created_at", "expires_at"]
    list_filter = ["status"]
    search_fields = ["id", "organization__slug"]

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [f.name for f in Hold._meta.fields] + ["amount"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Amount (USD)")
    def amount(self, obj: Hold) -> str:
        return f"{from_units(obj.amount_units).normalize():f}"
