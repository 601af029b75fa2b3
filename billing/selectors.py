"""Reads of balances and ledger history, always scoped to an organisation."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, F, Max, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import LimitReset, Organization
from billing.models import BillingProfile, EntryKind, LedgerEntry, Purchase
from billing.stripe_client import stripe_enabled
from switchyard.money import from_units


def balance_get(*, organization: Organization) -> Decimal:
    organization.refresh_from_db(fields=["balance_units"])
    return from_units(organization.balance_units)


def ledger_balance_units(*, organization_id: int) -> int:
    """The balance as the ledger says it (the truth the cached column must equal)."""
    return (
        LedgerEntry.objects.filter(organization_id=organization_id).aggregate(s=Sum("amount_units"))["s"] or 0
    )


def credits_totals(*, organization_id: int) -> tuple[Decimal, Decimal]:
    """(total credits purchased/granted net of refunds, total spent on usage)."""
    agg = LedgerEntry.objects.filter(organization_id=organization_id).aggregate(
        credits=Sum("amount_units", filter=~Q(kind=EntryKind.USAGE)),
        usage=Sum("amount_units", filter=Q(kind=EntryKind.USAGE)),
    )
    return from_units(agg["credits"] or 0), from_units(-(agg["usage"] or 0))


def limit_period_start(reset: str, now: datetime | None = None) -> datetime | None:
    """Start of the current credit-limit window (UTC), or None for a limit that never resets."""
    now = now or timezone.now()
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if reset == LimitReset.DAILY:
        return day
    if reset == LimitReset.WEEKLY:
        return day - timedelta(days=day.weekday())
    if reset == LimitReset.MONTHLY:
        return day.replace(day=1)
    return None


def key_usage_units(*, api_key_id: int, since: datetime | None = None) -> int:
    qs = LedgerEntry.objects.filter(api_key_id=api_key_id, kind=EntryKind.USAGE)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    return -(qs.aggregate(s=Sum("amount_units"))["s"] or 0)


def ledger_list(*, organization_id: int) -> QuerySet[LedgerEntry]:
    return LedgerEntry.objects.filter(organization_id=organization_id)


# --- Dashboard reads ----------------------------------------------------------------------------


def ledger_history(*, organization_id: int, days: int = 90, limit: int = 200) -> list[dict[str, Any]]:
    """The credits page's history: purchases, grants, refunds and adjustments one by one, usage summed per day.

    Newest first; each row has `date`, `kind`, `label`, `amount` (signed Decimal USD) and, for usage,
    `count` (how many generations that day).
    """
    since = timezone.now() - timedelta(days=days)
    rows: list[dict[str, Any]] = []
    entries = (
        LedgerEntry.objects.filter(organization_id=organization_id, created_at__gte=since)
        .exclude(kind=EntryKind.USAGE)
        .order_by("-created_at", "-id")[:limit]
    )
    for e in entries:
        rows.append(
            {
                "date": e.created_at,
                "kind": e.kind,
                "label": e.get_kind_display(),
                "reason": e.reason,
                "amount": from_units(e.amount_units),
            }
        )
    usage = (
        LedgerEntry.objects.filter(
            organization_id=organization_id, kind=EntryKind.USAGE, created_at__gte=since
        )
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(total=Sum("amount_units"), count=Count("id"), last=Max("created_at"))
        .order_by("-day")
    )
    for u in usage:
        rows.append(
            {
                "date": u["last"],
                "day": u["day"],
                "kind": EntryKind.USAGE,
                "label": "Usage",
                "reason": f"{u['count']} request{'s' if u['count'] != 1 else ''}",
                "amount": from_units(u["total"] or 0),
                "count": u["count"],
            }
        )
    rows.sort(key=lambda r: r["date"], reverse=True)
    return rows[:limit]


def spend_since(*, organization_id: int, since: datetime) -> Decimal:
    total = (
        LedgerEntry.objects.filter(
            organization_id=organization_id, kind=EntryKind.USAGE, created_at__gte=since
        ).aggregate(s=Sum("amount_units"))["s"]
        or 0
    )
    return from_units(-total)


def purchase_limits_usd() -> tuple[Decimal, Decimal]:
    """(minimum, maximum) credits one purchase may buy (SWITCHYARD_PURCHASE_MIN_USD / _MAX_USD)."""
    return settings.SWITCHYARD_PURCHASE_MIN_USD, settings.SWITCHYARD_PURCHASE_MAX_USD


def purchase_fee_usd(*, amount_usd: Decimal) -> Decimal:
    """The card fee shown next to a credit purchase, to the cent: SWITCHYARD_PURCHASE_FEE_PERCENT of the
    amount, at least SWITCHYARD_PURCHASE_FEE_MIN_USD (OpenRouter's: 5.5%, at least $0.80)."""
    percent = settings.SWITCHYARD_PURCHASE_FEE_PERCENT
    if percent <= 0 and settings.SWITCHYARD_PURCHASE_FEE_MIN_USD <= 0:
        return Decimal("0.00")
    fee = (amount_usd * percent / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return max(fee, settings.SWITCHYARD_PURCHASE_FEE_MIN_USD.quantize(Decimal("0.01")))


def billing_profile_get(*, organization_id: int) -> BillingProfile | None:
    return BillingProfile.objects.filter(pk=organization_id).first()


def purchase_list(*, organization_id: int) -> QuerySet[Purchase]:
    return Purchase.objects.filter(organization_id=organization_id)


def auto_topup_due(*, organization_ids: Iterable[int]) -> list[int]:
    """Which of these organisations' balances are below their auto top-up threshold (one query)."""
    if not stripe_enabled():
        return []
    return list(
        BillingProfile.objects.filter(
            organization_id__in=list(organization_ids),
            auto_topup_enabled=True,
            organization__flagged=False,
            organization__balance_units__lt=F("auto_topup_threshold_units"),
        )
        .exclude(payment_method_id="")
        .values_list("organization_id", flat=True)
    )
