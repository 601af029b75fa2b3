"""Dashboard pages for credits: balance, history, buying credits (when Stripe is set up), auto top-up."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.validators import MaxValueValidator, MinValueValidator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.dashboard import DashboardRequest, dashboard_view, render_dashboard
from billing import selectors, services
from billing.models import PurchaseKind, PurchaseStatus
from billing.stripe_client import stripe_enabled
from switchyard.errors import SwitchyardError
from switchyard.money import from_units


def _checkout() -> Any:
    """Stripe Checkout, when Stripe is configured (STRIPE_API_KEY); None shows "not configured"."""
    if not stripe_enabled():
        return None
    return getattr(services, "checkout_session_create", None)


def _auto_topup_supported() -> bool:
    return stripe_enabled()


def _limits_help() -> str:
    low, high = selectors.purchase_limits_usd()
    return f"Between ${low:,} and ${high:,}."


def operator_contact() -> dict[str, str] | None:
    """SWITCHYARD_OPERATOR_CONTACT as a link: an email address becomes mailto:, a URL stays itself."""
    contact = str(getattr(settings, "SWITCHYARD_OPERATOR_CONTACT", "") or "").strip()
    if not contact:
        return None
    if contact.startswith(("https://", "http://")):
        return {"text": contact, "href": contact}
    if "@" in contact and " " not in contact:
        return {"text": contact, "href": "mailto:" + contact.removeprefix("mailto:")}
    return {"text": contact, "href": ""}


class BuyForm(forms.Form):
    amount = forms.DecimalField(
        label="Amount (USD)",
        max_digits=9,
        decimal_places=2,
        initial=Decimal("20"),
        widget=forms.NumberInput(attrs={"step": "1", "inputmode": "decimal"}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        low, high = selectors.purchase_limits_usd()
        field = self.fields["amount"]
        field.validators = [MinValueValidator(low), MaxValueValidator(high)]
        field.help_text = _limits_help()
        field.widget.attrs.update({"min": str(low), "max": str(high)})


class AutoTopupForm(forms.Form):
    threshold = forms.DecimalField(
        label="When the balance falls below (USD)",
        required=False,
        min_value=Decimal(0),
        max_digits=9,
        decimal_places=2,
        widget=forms.NumberInput(attrs={"step": "1", "inputmode": "decimal"}),
    )
    amount = forms.DecimalField(
        label="Buy this much (USD)",
        required=False,
        max_digits=9,
        decimal_places=2,
        widget=forms.NumberInput(attrs={"step": "1", "inputmode": "decimal"}),
        help_text="Leave both empty to turn auto top-up off.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        low, high = selectors.purchase_limits_usd()
        self.fields["amount"].validators = [MinValueValidator(low), MaxValueValidator(high)]


def _quote(amount: Decimal | None) -> dict[str, Any]:
    if amount is None or amount <= 0:
        return {"amount": None, "fee": None, "total": None}
    fee = selectors.purchase_fee_usd(amount_usd=amount)
    return {"amount": amount, "fee": fee, "total": amount + fee}


def _credits_context(request: DashboardRequest, **extra: Any) -> dict[str, Any]:
    org = request.org
    total_credits, total_usage = selectors.credits_totals(organization_id=org.pk)
    topup = None
    profile = selectors.billing_profile_get(organization_id=org.pk)
    if _auto_topup_supported():
        on = profile is not None and profile.auto_topup_enabled
        threshold = profile.auto_topup_threshold_units if on and profile else None
        amount = profile.auto_topup_amount_units if on and profile else None
        topup = AutoTopupForm(
            initial={
                "threshold": from_units(threshold).normalize() if threshold is not None else None,
                "amount": from_units(amount).normalize() if amount is not None else None,
            }
        )
    buy = BuyForm()
    context = {
        "section": "credits",
        "balance": selectors.balance_get(organization=org),
        "total_credits": total_credits,
        "total_usage": total_usage,
        "history": selectors.ledger_history(organization_id=org.pk),
        "purchases_enabled": _checkout() is not None,
        "buy_form": buy,
        "quote": _quote(buy.fields["amount"].initial),
        "topup_form": topup,
        "billing_profile": profile,
        "purchase_limits": selectors.purchase_limits_usd(),
        "operator_contact": operator_contact(),
    }
    context.update(extra)
    return context


@dashboard_view()
def credits(request: DashboardRequest) -> HttpResponse:
    status = request.GET.get("checkout")
    if status == "success":
        latest = (
            selectors.purchase_list(organization_id=request.org.pk)
            .filter(kind=PurchaseKind.CHECKOUT)
            .order_by("-created_at")
            .first()
        )
        if latest is not None and latest.status == PurchaseStatus.PAID:
            messages.success(
                request, "Thank you! The payment is confirmed and the credits are in your balance."
            )
        else:
            messages.success(
                request, "Thank you! Your credits appear here as soon as the payment is confirmed."
            )
    elif status == "cancelled":
        messages.info(request, "Checkout cancelled; nothing was charged.")
    return render_dashboard(request, "dashboard/credits.html", _credits_context(request))


@dashboard_view()
def credits_fee(request: DashboardRequest) -> HttpResponse:
    """htmx partial: the fee and total for the amount typed so far."""
    return render(request, "dashboard/_fee.html", {"quote": _quote(_typed_amount(request.GET.get("amount")))})


def _typed_amount(raw: str | None) -> Decimal | None:
    """What someone is typing into an amount field, if it is a purchasable number of dollars (None
    otherwise): arithmetic on `1e999999999` would overflow the decimal context, a 500."""
    try:
        amount = Decimal((raw or "").strip()[:32] or "0")
    except InvalidOperation:
        return None
    _, high = selectors.purchase_limits_usd()
    if not amount.is_finite() or not 0 <= amount <= high:
        return None
    return amount.quantize(Decimal("0.01"))


@dashboard_view(manage=True)
@require_POST
def credits_buy(request: DashboardRequest) -> HttpResponse:
    checkout = _checkout()
    form = BuyForm(request.POST)
    if checkout is None:
        messages.error(request, "Buying credits is not available on this server: ask your operator.")
        return redirect("credits")
    if form.is_valid():
        amount = form.cleaned_data["amount"]
        page = request.build_absolute_uri(reverse("credits"))
        try:
            session = checkout(
                organization=request.org,
                amount_usd=amount,
                user=request.user,
                success_url=page + "?checkout=success",
                cancel_url=page + "?checkout=cancelled",
            )
        except SwitchyardError as exc:
            form.add_error("amount", exc.message)
        else:
            url = session if isinstance(session, str) else getattr(session, "url", None)
            if url is None and isinstance(session, dict):
                url = session.get("url")
            if url:
                return redirect(url)
            messages.error(request, "The payment provider did not return a checkout page; try again.")
            return redirect("credits")
    return render_dashboard(
        request,
        "dashboard/credits.html",
        _credits_context(
            request, buy_form=form, quote=_quote(form.cleaned_data.get("amount") if form.is_valid() else None)
        ),
        status=400,
    )


@dashboard_view(manage=True)
@require_POST
def credits_auto_topup(request: DashboardRequest) -> HttpResponse:
    if not _auto_topup_supported():
        raise PermissionDenied("Auto top-up is not available.")
    form = AutoTopupForm(request.POST)
    if form.is_valid():
        try:
            services.organization_auto_topup_set(
                organization=request.org,
                threshold_usd=form.cleaned_data["threshold"],
                amount_usd=form.cleaned_data["amount"],
            )
        except SwitchyardError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Auto top-up saved.")
            return redirect("credits")
    return render_dashboard(
        request, "dashboard/credits.html", _credits_context(request, topup_form=form), status=400
    )
