"""Reads of balances and ledger history, always scoped to an organisation."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from accounts.models import LimitReset, Organization
from billing.models import EntryKind, LedgerEntry
from billing.money import from_units


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
