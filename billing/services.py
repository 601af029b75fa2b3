"""Writes that move money: every one appends to the ledger and is idempotent on its source."""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F

from accounts.models import Organization, User
from billing.models import EntryKind, LedgerEntry
from billing.money import to_units
from switchyard.errors import BadRequest, SwitchyardError
from switchyard.shared import redis_enabled

logger = logging.getLogger("switchyard.billing")

# The ledger's amount and balance columns are signed 64-bit: refuse, don't crash on, anything bigger.
MAX_ENTRY_UNITS = 2**63 - 1


def ledger_append(
    *,
    organization_id: int,
    kind: str,
    amount_units: int,
    source: str,
    reason: str = "",
    api_key_id: int | None = None,
    created_by: User | None = None,
) -> tuple[LedgerEntry, bool]:
    """Append one entry and move the cached balance in the same transaction.

    Returns (entry, created). A second call with the same (kind, source) changes nothing and returns
    the first entry: the unique constraint decides, not a prior read.
    """
    try:
        with transaction.atomic():
            entry = LedgerEntry.objects.create(
                organization_id=organization_id,
                kind=kind,
                amount_units=amount_units,
                source=source,
                reason=reason[:300],
                api_key_id=api_key_id,
                created_by=created_by,
            )
            Organization.objects.filter(pk=organization_id).update(
                balance_units=F("balance_units") + amount_units, ledger_version=F("ledger_version") + 1
            )
            version = Organization.objects.values_list("ledger_version", flat=True).get(pk=organization_id)
            if kind != EntryKind.USAGE:  # usage moves the mirror itself, in APPLY_LUA
                transaction.on_commit(lambda: mirror_balance(organization_id, amount_units, version))
    except IntegrityError:
        existing = LedgerEntry.objects.get(kind=kind, source=source)
        if existing.organization_id != organization_id or existing.amount_units != amount_units:
            raise LedgerConflict(f"{kind} {source} was already recorded for another organisation or amount.")
        return existing, False
    return entry, True


class LedgerConflict(SwitchyardError):
    status, code = 409, "ledger_conflict"


def mirror_balance(organization_id: int, amount_units: int, version: int) -> None:
    """Move the hot path's Redis copy by a committed non-usage entry (skipped if already included)."""
    if redis_enabled():
        from billing.holds import redis_balance_sync

        redis_balance_sync(organization_id, amount_units, version)


def credits_grant(
    *,
    organization: Organization,
    amount_usd: Decimal,
    reason: str,
    created_by: User | None = None,
    source: str | None = None,
    kind: str = EntryKind.GRANT,
) -> LedgerEntry:
    if kind not in (EntryKind.GRANT, EntryKind.ADJUSTMENT):
        raise BadRequest("Only grants and adjustments can be made by hand.")
    if not reason.strip():
        raise BadRequest("A grant needs a reason.")
    try:
        units = to_units(amount_usd)
    except ValueError as exc:
        raise BadRequest(str(exc))
    if abs(units) > MAX_ENTRY_UNITS:
        raise BadRequest(f"{amount_usd} USD is more than one ledger entry can hold.")
    if kind == EntryKind.GRANT and units <= 0:
        raise BadRequest("A grant must be a positive amount.")
    entry, _ = ledger_append(
        organization_id=organization.pk,
        kind=kind,
        amount_units=units,
        source=source or f"{kind}:{uuid.uuid4()}",
        reason=reason.strip(),
        created_by=created_by,
    )
    return entry


def usage_charge(
    *, organization_id: int, generation_id: str, cost_units: int, api_key_id: int | None, model: str
) -> tuple[LedgerEntry, bool]:
    """Charge one generation; safe to call any number of times for the same generation id.

    A replay that disagrees with the first charge changes nothing (the first write wins) and is
    logged for the auditor, rather than failing a whole usage batch forever.
    """
    try:
        return ledger_append(
            organization_id=organization_id,
            kind=EntryKind.USAGE,
            amount_units=-cost_units,
            source=generation_id,
            reason=model,
            api_key_id=api_key_id,
        )
    except LedgerConflict:
        logger.error("usage replay for %s disagrees with the recorded charge; kept the first", generation_id)
        return LedgerEntry.objects.get(kind=EntryKind.USAGE, source=generation_id), False


def organization_auto_topup_set(
    *, organization: Organization, threshold_usd: Decimal | None, amount_usd: Decimal | None
) -> Organization:
    """Auto top-up settings (when the Organization model has them): both set, or both cleared (off)."""
    if not hasattr(organization, "auto_topup_threshold_units"):
        raise BadRequest("Auto top-up is not available on this installation.")
    if (threshold_usd is None) != (amount_usd is None):
        raise BadRequest("Set both the threshold and the amount, or neither to turn auto top-up off.")
    threshold: int | None
    amount: int | None
    if amount_usd is not None and threshold_usd is not None:
        if amount_usd <= 0 or threshold_usd < 0:
            raise BadRequest("The amount must be positive and the threshold not negative.")
        threshold, amount = to_units(threshold_usd), to_units(amount_usd)
    else:
        # "Off" is whatever the column can hold for nothing: NULL if nullable, else 0.
        amount_field = "auto_topup_amount_units"
        off = None if Organization._meta.get_field(amount_field).null else 0
        threshold = amount = off
    # The fields belong to the Stripe billing work; written by name so this module works before they exist.
    fields = {"auto_topup_threshold_units": threshold, "auto_topup_amount_units": amount}
    Organization.objects.filter(pk=organization.pk).update(**fields)
    organization.refresh_from_db(fields=list(fields))
    return organization
