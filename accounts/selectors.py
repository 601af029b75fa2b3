"""Reads of keys and memberships, scoped to an organisation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from accounts.models import (
    MANAGER_ROLES,
    PLAYGROUND_KEY_NAME,
    ApiKey,
    AuditEvent,
    Invitation,
    Membership,
    Organization,
    User,
)
from billing.models import EntryKind, LedgerEntry
from billing.selectors import key_usage_units, limit_period_start
from routing.ratelimit import rate_limit_summary
from switchyard.money import from_units, json_number


def key_summary(*, key_id: int) -> dict[str, Any]:
    key = ApiKey.objects.get(pk=key_id)
    usage = key_usage_units(api_key_id=key.pk, since=limit_period_start(key.limit_reset))
    total_usage = key_usage_units(api_key_id=key.pk) if key.limit_reset != "none" else usage
    limit = key.limit_units
    return {
        "label": f"{key.name} ({key.prefix}...)",
        "name": key.name,
        "limit": json_number(from_units(limit)) if limit is not None else None,
        "limit_reset": None if key.limit_reset == "none" else key.limit_reset,
        "usage": json_number(from_units(total_usage)),
        "usage_period": json_number(from_units(usage)),
        "limit_remaining": json_number(from_units(max(limit - usage, 0))) if limit is not None else None,
        "is_free_tier": not key.organization.ledger.filter(kind="purchase").exists(),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "rate_limit": rate_limit_summary(
            key_rpm=key.rate_limit_rpm,
            key_tpm=key.rate_limit_tpm,
            org_rpm=key.organization.rate_limit_rpm,
            org_tpm=key.organization.rate_limit_tpm,
            org_id=key.organization_id,
        ),
    }


def api_key_list(*, organization: Organization) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(organization=organization, deleted_at__isnull=True)


def organization_list_for_user(*, user: User) -> QuerySet[Organization]:
    return Organization.objects.filter(memberships__user=user).order_by("name")


# --- Dashboard reads ----------------------------------------------------------------------------


def membership_get(*, user: User, organization_id: int | None) -> Membership | None:
    """The user's membership in that organisation, or else in their first one (None: no organisation)."""
    memberships = Membership.objects.filter(user=user).select_related("organization")
    if organization_id is not None:
        found = memberships.filter(organization_id=organization_id).first()
        if found is not None:
            return found
    return memberships.order_by("organization__name", "organization_id").first()


def membership_list(*, organization: Organization) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(organization=organization)
        .select_related("user")
        .order_by("created_at", "pk")
    )


def invitation_list_pending(*, organization: Organization) -> QuerySet[Invitation]:
    return Invitation.objects.filter(
        organization=organization,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
        expires_at__gt=timezone.now(),
    ).select_related("invited_by")


def api_key_dashboard_list(
    *, organization: Organization, created_by: User | None = None
) -> list[dict[str, Any]]:
    """Keys as the dashboard lists them, with usage and the remaining limit.

    `created_by` narrows the list to one person's keys, without their playground key (what a plain
    member sees). Owners and admins (no `created_by`) see every key, playground keys included, so
    they can revoke any credential of the organisation; each row says whether it is a playground key.
    """
    keys = api_key_list(organization=organization).select_related("created_by")
    if created_by is not None:
        keys = keys.filter(created_by=created_by).exclude(name=PLAYGROUND_KEY_NAME)
    key_rows = list(keys)
    now = timezone.now()
    # Today is the UTC day (as the daily limit window); the week is the last 7 days to the minute.
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    week = now - timedelta(days=7)
    totals = {
        key_id: (total, day, last_week)
        for key_id, total, day, last_week in LedgerEntry.objects.filter(
            api_key__in=key_rows, kind=EntryKind.USAGE
        )
        .values_list("api_key_id")
        .annotate(
            s=Sum("amount_units"),
            d=Sum("amount_units", filter=Q(created_at__gte=today)),
            w=Sum("amount_units", filter=Q(created_at__gte=week)),
        )
        .values_list("api_key_id", "s", "d", "w")
    }
    rows = []
    for key in key_rows:
        total, day, last_week = (-(units or 0) for units in totals.get(key.pk, (0, 0, 0)))
        period = (
            key_usage_units(api_key_id=key.pk, since=limit_period_start(key.limit_reset))
            if key.limit_units is not None and key.limit_reset != "none"
            else total
        )
        rows.append(
            {
                "key": key,
                "usage": from_units(total),
                "spend_today": from_units(day),
                "spend_week": from_units(last_week),
                "usage_period": from_units(period),
                "limit": from_units(key.limit_units) if key.limit_units is not None else None,
                "remaining": from_units(max(key.limit_units - period, 0))
                if key.limit_units is not None
                else None,
                "expired": key.expires_at is not None and key.expires_at <= now,
                "playground": key.name == PLAYGROUND_KEY_NAME,
            }
        )
    return rows


def api_key_get_for_member(
    *, membership: Membership, key_id: int, include_playground: bool = False
) -> ApiKey | None:
    """A key the member may manage: any of the org's for owners and admins, only their own for members.

    Playground keys are managed by the playground itself; `include_playground` lets owners and admins
    reach them too (to disable or revoke one), never a plain member.
    """
    keys = api_key_list(organization=membership.organization)
    if membership.role not in MANAGER_ROLES:
        keys = keys.filter(created_by=membership.user)
    if not (include_playground and membership.role in MANAGER_ROLES):
        keys = keys.exclude(name=PLAYGROUND_KEY_NAME)
    return keys.filter(pk=key_id).first()


def audit_event_list(*, organization: Organization, action: str | None = None) -> QuerySet[AuditEvent]:
    """The organisation's audit trail, newest first, optionally one kind of action (or a prefix: `api_key.`)."""
    events = AuditEvent.objects.filter(organization=organization).select_related("actor")
    if action:
        events = (
            events.filter(action__startswith=action) if action.endswith(".") else events.filter(action=action)
        )
    return events
