"""Reads of keys and memberships, scoped to an organisation."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from accounts.models import ApiKey, Organization, User
from billing.money import from_units, json_number
from billing.selectors import key_usage_units, limit_period_start


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
        "rate_limit": {"requests": 600, "interval": "60s"},
    }


def api_key_list(*, organization: Organization) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(organization=organization, deleted_at__isnull=True)


def organization_list_for_user(*, user: User) -> QuerySet[Organization]:
    return Organization.objects.filter(memberships__user=user).order_by("name")
