"""Admin for the ledger (read-only), holds, purchases, refunds, disputes, Stripe events, audit findings
and parked usage events.

Grants and adjustments go through a service that records the reason and the acting admin."""

from __future__ import annotations

from decimal import InvalidOperation
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse

from accounts.models import Organization
from billing import services
from billing.audit import books_audit_run
from billing.enqueue import stripe_event_process_later
from billing.models import (
    AuditFinding,
    BillingProfile,
    Dispute,
    Hold,
    LedgerEntry,
    ParkedUsageEvent,
    ParkedUsageStatus,
    Purchase,
    Refund,
    StripeEvent,
)
from billing.parking import parked_usage_dismiss, parked_usage_retry
from switchyard.errors import SwitchyardError
from switchyard.money import cents_str, from_units


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


def _usd(units: int | None) -> str:
    return "—" if units is None else f"{from_units(units).normalize():f}"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Money records are written by services only; the admin shows and searches them."""

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [f.name for f in self.model._meta.fields] + list(self.extra_readonly)

    extra_readonly: tuple[str, ...] = ()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Purchase)
class PurchaseAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "organization",
        "kind",
        "status",
        "credits",
        "charged",
        "refunded",
        "disputed",
    ]
    list_filter = ["kind", "status", "disputed"]
    search_fields = [
        "organization__slug",
        "stripe_checkout_session_id",
        "stripe_payment_intent_id",
        "stripe_charge_id",
    ]
    date_hierarchy = "created_at"
    list_select_related = ["organization"]
    extra_readonly = ("credits", "charged", "refunded")

    @admin.display(description="Credits (USD)")
    def credits(self, obj: Purchase) -> str:
        return _usd(obj.credits_units)

    @admin.display(description="Charged")
    def charged(self, obj: Purchase) -> str:
        return f"{cents_str(obj.amount_cents)} {obj.currency.upper()}"

    @admin.display(description="Refunded")
    def refunded(self, obj: Purchase) -> str:
        return cents_str(obj.refunded_cents) if obj.refunded_cents else "—"


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "organization", "stripe_charge_id", "cumulative", "credits_removed"]
    search_fields = ["organization__slug", "stripe_charge_id", "stripe_event_id"]
    list_select_related = ["organization"]
    extra_readonly = ("cumulative", "credits_removed")

    @admin.display(description="Refunded so far")
    def cumulative(self, obj: Refund) -> str:
        return cents_str(obj.cumulative_cents)

    @admin.display(description="Credits removed (USD)")
    def credits_removed(self, obj: Refund) -> str:
        return _usd(obj.amount_units)


@admin.register(Dispute)
class DisputeAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "organization",
        "stripe_dispute_id",
        "amount",
        "held",
        "reason",
        "status",
        "closed_at",
    ]
    list_filter = ["reason", "status"]
    search_fields = ["organization__slug", "stripe_dispute_id", "stripe_charge_id"]
    list_select_related = ["organization"]
    extra_readonly = ("amount", "held")

    @admin.display(description="Amount")
    def amount(self, obj: Dispute) -> str:
        return cents_str(obj.amount_cents)

    @admin.display(description="Credits held (USD)")
    def held(self, obj: Dispute) -> str:
        return str(from_units(obj.held_units))


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "id", "type", "status", "ref", "processed_at"]
    list_filter = ["type", "status"]
    search_fields = ["id", "ref"]
    date_hierarchy = "received_at"
    actions = ["reprocess"]

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.action(description="Process again (deferred or unprocessed events only)")
    def reprocess(self, request: HttpRequest, queryset: Any) -> None:
        ids = list(queryset.filter(status__in=["received", "deferred"]).values_list("id", flat=True))
        for event_id in ids:
            stripe_event_process_later(event_id)
        messages.info(request, f"Queued {len(ids)} event(s).")


@admin.register(AuditFinding)
class AuditFindingAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "kind",
        "subject",
        "organization",
        "expected",
        "actual",
        "repaired",
        "resolved_at",
    ]
    list_filter = ["kind", "repaired", ("resolved_at", admin.EmptyFieldListFilter)]
    search_fields = ["subject", "organization__slug", "detail"]
    date_hierarchy = "created_at"
    list_select_related = ["organization"]
    extra_readonly = ("expected", "actual")
    actions = ["run_audit"]

    @admin.display(description="Expected (USD)")
    def expected(self, obj: AuditFinding) -> str:
        return _usd(obj.expected_units)

    @admin.display(description="Actual (USD)")
    def actual(self, obj: AuditFinding) -> str:
        return _usd(obj.actual_units)

    @admin.action(description="Run the auditor now")
    def run_audit(self, request: HttpRequest, queryset: Any) -> None:
        report = books_audit_run()
        messages.info(request, f"Audit done: {len(report.findings)} finding(s), {report.repaired} repaired.")


@admin.register(ParkedUsageEvent)
class ParkedUsageEventAdmin(ReadOnlyAdmin):
    """Usage the writers could not store (docs/operations-usage.md). Read-only: fix the cause, then
    retry; an event that can never be written is dismissed (written off), with who and why."""

    list_display = [
        "first_seen_at",
        "generation_id",
        "org_id",
        "cost",
        "status",
        "attempts",
        "last_seen_at",
        "short_reason",
    ]
    list_filter = ["status", "mirrored"]
    search_fields = ["generation_id", "reason", "raw"]
    date_hierarchy = "first_seen_at"
    extra_readonly = ("cost",)
    actions = ["retry_parked", "dismiss_parked"]

    @admin.display(description="Cost (USD)")
    def cost(self, obj: ParkedUsageEvent) -> str:
        return _usd(obj.cost_units)

    @admin.display(description="Reason")
    def short_reason(self, obj: ParkedUsageEvent) -> str:
        return obj.reason[:120]

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)

    @admin.action(
        description="Retry writing the selected events (after fixing the cause)", permissions=["retry"]
    )
    def retry_parked(self, request: HttpRequest, queryset: Any) -> None:
        ids = list(queryset.filter(status=ParkedUsageStatus.PARKED).values_list("pk", flat=True))
        result = parked_usage_retry(parked_ids=ids, user=request.user)
        level = messages.SUCCESS if not result.still_parked else messages.WARNING
        messages.add_message(
            request,
            level,
            f"{result.written} written to the ledger, {result.still_parked} still parked (see their reason).",
        )

    @admin.action(description="Dismiss (write off) the selected events", permissions=["retry"])
    def dismiss_parked(self, request: HttpRequest, queryset: Any) -> None:
        ids = list(queryset.filter(status=ParkedUsageStatus.PARKED).values_list("pk", flat=True))
        done = parked_usage_dismiss(
            parked_ids=ids, user=request.user, note=f"dismissed in admin by {request.user}"
        )
        messages.info(request, f"{done} event(s) dismissed; their charge is written off.")


@admin.register(BillingProfile)
class BillingProfileAdmin(admin.ModelAdmin):
    list_display = [
        "organization",
        "stripe_customer_id",
        "auto_topup_enabled",
        "threshold",
        "amount",
        "auto_topup_failures",
    ]
    list_filter = ["auto_topup_enabled"]
    search_fields = ["organization__slug", "stripe_customer_id"]
    list_select_related = ["organization"]
    readonly_fields = [
        "organization",
        "stripe_customer_id",
        "payment_method_id",
        "auto_topup_threshold_units",
        "auto_topup_amount_units",
        "auto_topup_failures",
        "auto_topup_last_attempt_at",
        "updated_at",
    ]
    fields = [*readonly_fields, "auto_topup_enabled", "auto_topup_notice"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Threshold (USD)")
    def threshold(self, obj: BillingProfile) -> str:
        return _usd(obj.auto_topup_threshold_units)

    @admin.display(description="Top-up (USD)")
    def amount(self, obj: BillingProfile) -> str:
        return _usd(obj.auto_topup_amount_units)
