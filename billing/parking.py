"""Parked usage events (the dead-letter table): retry or dismiss them, and the figures that surface them.

The writers (billing.usage) park an event the database refuses even on its own. Its charge is not in
the ledger until `parked_usage_retry` writes it (after the cause is fixed: a restored organisation, a
deployed fix), or an operator writes it off with `parked_usage_dismiss`. Admin, /metrics, /readyz
and the auditor read the totals here, so a parked event is never silent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
from django.db import transaction
from django.db.models import Count, F, Sum
from django.utils import timezone

from billing.models import Hold, HoldStatus, ParkedUsageEvent, ParkedUsageStatus
from billing.usage import is_outage, usage_event_write_alone, usage_failure_reason

logger = logging.getLogger("switchyard.usage")


@dataclass(frozen=True, slots=True)
class RetryResult:
    written: int
    still_parked: int


def parked_usage_retry(*, parked_ids: list[int], user: Any = None) -> RetryResult:
    """Write each parked event again. One that lands leaves the table's open set (status `written`)
    in the same transaction as its ledger entry; one that fails again keeps its place with the new
    reason. An outage raises (nothing changes). Retrying a written event does nothing (idempotent)."""
    written = failed = 0
    for row in ParkedUsageEvent.objects.filter(pk__in=parked_ids, status=ParkedUsageStatus.PARKED):
        now = timezone.now()
        try:
            event = orjson.loads(row.raw)
            if not isinstance(event, dict):
                raise ValueError("not a JSON object")
            with transaction.atomic():
                claimed = ParkedUsageEvent.objects.filter(pk=row.pk, status=ParkedUsageStatus.PARKED).update(
                    status=ParkedUsageStatus.WRITTEN,
                    resolved_at=now,
                    resolved_by=user if getattr(user, "pk", None) else None,
                    attempts=F("attempts") + 1,
                    last_seen_at=now,
                )
                if claimed:
                    usage_event_write_alone(event)
        except Exception as exc:
            if is_outage(exc):
                raise
            failed += 1
            reason = usage_failure_reason(exc)
            ParkedUsageEvent.objects.filter(pk=row.pk, status=ParkedUsageStatus.PARKED).update(
                attempts=F("attempts") + 1, last_seen_at=now, reason=reason
            )
            logger.warning("retry of parked usage event %s failed: %s", row.generation_id, reason)
            continue
        if claimed:
            written += 1
            logger.info("parked usage event %s written on retry", row.generation_id)
    return RetryResult(written=written, still_parked=failed)


@transaction.atomic
def parked_usage_dismiss(*, parked_ids: list[int], user: Any, note: str) -> int:
    """Write parked events off: their charge is never made (the platform's loss), recorded with who
    and why. An embedded-mode hold kept for the charge is released; in full mode the auditor moves
    the Redis mirror back to the ledger. Returns how many were dismissed."""
    rows = list(
        ParkedUsageEvent.objects.select_for_update().filter(
            pk__in=parked_ids, status=ParkedUsageStatus.PARKED
        )
    )
    now = timezone.now()
    for row in rows:
        try:
            event = orjson.loads(row.raw)
        except orjson.JSONDecodeError:
            event = None
        hold = event.get("hold") if isinstance(event, dict) else None
        if isinstance(hold, str):
            Hold.objects.filter(pk=hold, status=HoldStatus.SETTLED).update(status=HoldStatus.RELEASED)
        logger.warning("parked usage event %s dismissed: %s", row.generation_id, note)
    ParkedUsageEvent.objects.filter(pk__in=[r.pk for r in rows]).update(
        status=ParkedUsageStatus.DISMISSED,
        resolved_at=now,
        resolved_by=user if getattr(user, "pk", None) else None,
        note=note[:300],
    )
    return len(rows)


# ---- selectors ----------------------------------------------------------------------------------


def parked_usage_totals() -> tuple[int, int]:
    """(events, picodollars) parked and not yet written or dismissed, deployment-wide."""
    agg = ParkedUsageEvent.objects.filter(status=ParkedUsageStatus.PARKED).aggregate(
        n=Count("pk"), units=Sum("cost_units")
    )
    return agg["n"] or 0, agg["units"] or 0


def parked_usage_open() -> Any:
    return ParkedUsageEvent.objects.filter(status=ParkedUsageStatus.PARKED).order_by("first_seen_at")


def parked_mirrored_units_by_org() -> dict[int, int]:
    """Full mode: parked charges already moved into each organisation's Redis mirror balance (so the
    mirror is below the ledger by exactly this much until they are written or dismissed)."""
    rows = (
        ParkedUsageEvent.objects.filter(status=ParkedUsageStatus.PARKED, mirrored=True, org_id__isnull=False)
        .values("org_id")
        .annotate(units=Sum("cost_units"))
    )
    return {int(r["org_id"] or 0): int(r["units"] or 0) for r in rows}
