"""What billing adds to the layers below it, registered in BillingConfig.ready so that neither the core
(switchyard/) nor accounts imports billing: its /metrics figures (billing/metrics.py), the parked usage
count /readyz reports, the embedded usage writer's flush at exit, starter credits for a new
organisation and a key's spend limit moved in Redis when it is edited (accounts/events.py)."""

from __future__ import annotations

from typing import Any

from accounts import events
from accounts.models import Organization
from billing import metrics  # noqa: F401  (registers billing's /metrics state)
from billing.holds import key_limit_changed
from billing.parking import parked_usage_totals
from billing.services import starter_credits_grant
from billing.usage import embedded_writer_flush
from switchyard import drain, health


def _parked_events() -> int:
    return parked_usage_totals()[0]


health.database_report("usage_parked", _parked_events)
drain.on_exit_flush(embedded_writer_flush)


def _starter_credits(sender: Any, organization: Organization, **kwargs: Any) -> None:
    starter_credits_grant(organization=organization)


def _key_limit_changed(sender: Any, key_id: int, limit_units: int | None, **kwargs: Any) -> None:
    key_limit_changed(key_id, limit_units)


events.organization_created.connect(_starter_credits, dispatch_uid="billing.starter_credits")
events.api_key_limit_changed.connect(_key_limit_changed, dispatch_uid="billing.key_limit_changed")
