"""Writes that move money: every one appends to the ledger and is idempotent on its source."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import MANAGER_ROLES, Membership, Organization, User
from billing.audit import finding_record
from billing.enqueue import stripe_event_process_later
from billing.holds import redis_balance_sync
from billing.models import (
    BillingProfile,
    Dispute,
    EntryKind,
    FindingKind,
    LedgerEntry,
    Purchase,
    PurchaseKind,
    PurchaseStatus,
    Refund,
    StripeEvent,
    StripeEventStatus,
)
from billing.selectors import auto_topup_due as auto_topup_due
from billing.selectors import purchase_fee_usd, purchase_limits_usd
from billing.stripe_client import PaymentsUnavailable, stripe_client, stripe_enabled
from billing.stripe_payloads import WebhookRejected as WebhookRejected
from billing.stripe_payloads import webhook_event_parse
from switchyard.errors import BadRequest, Forbidden, SwitchyardError
from switchyard.money import UNITS_PER_USD, cents_str, from_units, to_units
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
    created_by_id: int | None = None,
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
                created_by_id=created_by.pk if created_by is not None else created_by_id,
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
        redis_balance_sync(organization_id, amount_units, version)


STARTER_SOURCE = "starter:{org_id}"


def starter_credits_grant(*, organization: Organization) -> LedgerEntry | None:
    """SWITCHYARD_STARTER_CREDITS for a new organisation, once: the ledger's (kind, source) constraint
    makes a second call (a retry, a re-run) a no-op. None when the operator grants nothing."""
    try:
        amount = Decimal(str(settings.SWITCHYARD_STARTER_CREDITS))
    except InvalidOperation:
        raise ImproperlyConfigured("SWITCHYARD_STARTER_CREDITS must be a decimal amount in USD.")
    if not amount.is_finite() or amount <= 0:
        return None
    try:
        units = to_units(amount)
    except ValueError as exc:
        raise ImproperlyConfigured(f"SWITCHYARD_STARTER_CREDITS: {exc}")
    entry, created = ledger_append(
        organization_id=organization.pk,
        kind=EntryKind.GRANT,
        amount_units=units,
        source=STARTER_SOURCE.format(org_id=organization.pk),
        reason="Starter credits",
    )
    if created:
        audit_record(
            action="credits.granted",
            organization=organization,
            target=entry,
            target_label=f"starter {amount} USD",
            metadata={"kind": EntryKind.GRANT, "amount_usd": str(amount), "reason": "Starter credits"},
        )
    return entry


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
    audit_record(
        action="credits.granted",
        organization=organization,
        actor=created_by,
        target=entry,
        target_label=f"{kind} {amount_usd} USD",
        metadata={"kind": kind, "amount_usd": str(amount_usd), "reason": reason.strip()},
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


# ---- Stripe purchases ----------------------------------------------------------------------------
#
# Money only arrives from verified webhooks (or, for an automatic top-up, from the PaymentIntent we
# confirmed ourselves): a Checkout redirect proves nothing. Each purchase credits the ledger once,
# keyed by its Stripe object (checkout session id or payment intent id).


def _cents(usd: Decimal) -> int:
    cents = usd * 100
    if cents != cents.to_integral_value():
        raise BadRequest(f"{usd} USD is not a whole number of cents.")
    return int(cents)


def purchase_amount_check(amount_usd: Decimal) -> Decimal:
    try:
        amount = Decimal(amount_usd)
    except (ArithmeticError, ValueError, TypeError):
        raise BadRequest("The amount must be a number of USD.")
    if not amount.is_finite():
        raise BadRequest("The amount must be a number of USD.")
    low, high = purchase_limits_usd()
    if amount < low or amount > high:
        raise BadRequest(f"Buy between ${low} and ${high}.", metadata={"min": str(low), "max": str(high)})
    _cents(amount)
    return amount


def billing_profile_get_or_create(*, organization_id: int) -> BillingProfile:
    profile, _ = BillingProfile.objects.get_or_create(organization_id=organization_id)
    return profile


def stripe_customer_ensure(*, organization: Organization) -> str:
    """The organisation's Stripe customer, created once (Stripe's idempotency key covers a race)."""
    profile = billing_profile_get_or_create(organization_id=organization.pk)
    if profile.stripe_customer_id:
        return profile.stripe_customer_id
    customer = stripe_client().v1.customers.create(
        params={
            "name": organization.name[:250],
            "metadata": {"switchyard_org": str(organization.pk), "switchyard_slug": organization.slug},
        },
        options={"idempotency_key": f"switchyard-customer-{organization.pk}"},
    )
    BillingProfile.objects.filter(pk=organization.pk, stripe_customer_id="").update(
        stripe_customer_id=customer.id
    )
    profile.refresh_from_db(fields=["stripe_customer_id"])
    return profile.stripe_customer_id


def checkout_session_create(
    *,
    organization: Organization,
    amount_usd: Decimal,
    user: User | None,
    success_url: str,
    cancel_url: str,
) -> str:
    """Start a Stripe Checkout for `amount_usd` of credits (+ the card fee); returns the page to send the user to.

    The card is saved on the organisation's Stripe customer for later off-session top-ups.
    """
    import stripe  # lazily: the web process only needs it for purchases (~15 MB of modules)

    if not stripe_enabled():
        raise PaymentsUnavailable("Purchases are not configured (set STRIPE_API_KEY).")
    organization.refresh_from_db(fields=["flagged"])
    if organization.flagged:
        raise Forbidden(
            "Purchases are blocked for this organisation because of a payment dispute; contact support."
        )
    amount = purchase_amount_check(amount_usd)
    fee = purchase_fee_usd(amount_usd=amount)
    customer = stripe_customer_ensure(organization=organization)
    purchase = Purchase.objects.create(
        organization=organization,
        kind=PurchaseKind.CHECKOUT,
        credits_units=to_units(amount),
        fee_units=to_units(fee),
        amount_cents=_cents(amount) + _cents(fee),
        idempotency_key=f"switchyard-checkout-{uuid.uuid4()}",
        created_by=user if user is not None and user.pk else None,
    )
    metadata = {"switchyard_org": str(organization.pk), "switchyard_purchase": str(purchase.pk)}
    line_items: list[dict[str, Any]] = [
        {
            "quantity": 1,
            "price_data": {
                "currency": "usd",
                "unit_amount": _cents(amount),
                "product_data": {"name": f"Switchyard credits (${amount:,.2f})"},
            },
        }
    ]
    if fee > 0:
        line_items.append(
            {
                "quantity": 1,
                "price_data": {
                    "currency": "usd",
                    "unit_amount": _cents(fee),
                    "product_data": {"name": "Card processing fee"},
                },
            }
        )
    try:
        params: Any = {
            "mode": "payment",
            "customer": customer,
            "client_reference_id": str(organization.pk),
            "line_items": line_items,
            "payment_intent_data": {"setup_future_usage": "off_session", "metadata": metadata},
            "metadata": metadata,
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
        session = stripe_client().v1.checkout.sessions.create(
            params=params, options={"idempotency_key": purchase.idempotency_key}
        )
    except stripe.StripeError as exc:
        Purchase.objects.filter(pk=purchase.pk).update(
            status=PurchaseStatus.FAILED, failure_message=str(exc.user_message or exc)[:300]
        )
        logger.warning("checkout session for org %s failed: %s", organization.pk, exc)
        raise SwitchyardError(
            "The payment provider is unavailable; try again shortly.",
            status=502,
            code="payment_provider_error",
        )
    Purchase.objects.filter(pk=purchase.pk).update(stripe_checkout_session_id=session.id)
    return str(session.url)


def _purchase_credit(purchase: Purchase, *, source: str, payment_intent: str | None) -> bool:
    """Mark a (locked) purchase paid and credit it once. True if this call credited it."""
    if purchase.status == PurchaseStatus.PAID:
        return False
    purchase.status = PurchaseStatus.PAID
    purchase.paid_at = timezone.now()
    purchase.failure_code = purchase.failure_message = ""
    fields = ["status", "paid_at", "failure_code", "failure_message"]
    if payment_intent and not purchase.stripe_payment_intent_id:
        purchase.stripe_payment_intent_id = payment_intent
        fields.append("stripe_payment_intent_id")
    purchase.save(update_fields=fields)
    label = "Auto top-up" if purchase.kind == PurchaseKind.AUTO_TOPUP else "Credit purchase"
    _, created = ledger_append(
        organization_id=purchase.organization_id,
        kind=EntryKind.PURCHASE,
        amount_units=purchase.credits_units,
        source=source,
        reason=f"{label} (${cents_str(purchase.amount_cents, ',')} charged)",
        created_by_id=purchase.created_by_id,
    )
    if payment_intent:
        # Refunds or disputes that arrived before the payment was confirmed can now be applied.
        transaction.on_commit(lambda: stripe_events_release(ref=payment_intent))
    return created


def stripe_events_release(*, ref: str) -> None:
    for event_id in StripeEvent.objects.filter(status=StripeEventStatus.DEFERRED, ref=ref).values_list(
        "id", flat=True
    ):
        stripe_event_process_later(event_id)


HANDLED_EVENTS = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
)


def stripe_webhook_receive(*, payload: bytes, signature: str | None) -> tuple[str, bool]:
    """Verify a delivery and record it (once); the work happens in a Celery task.

    Returns (event id, newly recorded). Raises WebhookRejected for a bad signature, a stale timestamp
    or a body that is not an event we can read (billing.stripe_payloads says which field).
    """
    import stripe  # lazily: the web process only needs it for purchases (~15 MB of modules)

    if not settings.STRIPE_WEBHOOK_SECRET:
        raise PaymentsUnavailable("Stripe webhooks are not configured (set STRIPE_WEBHOOK_SECRET).")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookRejected("Not a Stripe event: the body is not UTF-8.")
    try:
        stripe.WebhookSignature.verify_header(
            text,
            signature,
            settings.STRIPE_WEBHOOK_SECRET,
            tolerance=settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS,
        )
    except stripe.SignatureVerificationError as exc:
        raise WebhookRejected(f"Signature verification failed: {exc.user_message or exc}")
    # Our own parse and shape check, not the library's event object: a signed `[]` crashed it.
    event = webhook_event_parse(payload)
    event_id, event_type = event["id"], event["type"]
    if event_type not in HANDLED_EVENTS:
        return event_id, False
    created_ts = event.get("created")
    try:
        with transaction.atomic():
            StripeEvent.objects.create(
                id=event_id,
                type=event_type,
                payload=event,
                stripe_created=datetime.fromtimestamp(created_ts, tz=UTC) if created_ts else None,
            )
            transaction.on_commit(lambda: _enqueue_event(event_id))
    except IntegrityError:
        return event_id, False
    return event_id, True


def _enqueue_event(event_id: str) -> None:
    stripe_event_process_later(event_id)


def stripe_event_process(*, event_id: str) -> str:
    """Apply one recorded event; its status moves in the same transaction as its effect. Returns the status."""
    after_commit: list[Any] = []
    with transaction.atomic():
        try:
            ev = StripeEvent.objects.select_for_update().get(pk=event_id)
        except StripeEvent.DoesNotExist:
            return "missing"
        if ev.status not in (StripeEventStatus.RECEIVED, StripeEventStatus.DEFERRED):
            return ev.status
        obj = ev.payload.get("data", {}).get("object", {})
        status, ref = _EVENT_HANDLERS[ev.type](ev, obj, after_commit)
        ev.status, ev.ref = status, ref
        ev.processed_at = timezone.now() if status != StripeEventStatus.DEFERRED else None
        ev.save(update_fields=["status", "ref", "processed_at"])
    for job in after_commit:
        try:
            job()
        except Exception:  # follow-ups (saving the card) must never undo or fail the applied event
            logger.exception("follow-up of stripe event %s failed", event_id)
    return status


def _session_purchase(session: dict[str, Any]) -> Purchase | None:
    """The purchase a Checkout Session pays for, locked; created from its metadata if we lost the row."""
    purchase = Purchase.objects.select_for_update().filter(stripe_checkout_session_id=session["id"]).first()
    if purchase is not None:
        return purchase
    meta = session.get("metadata") or {}
    if meta.get("switchyard_purchase"):
        purchase = (
            Purchase.objects.select_for_update()
            .filter(pk=int(meta["switchyard_purchase"]), kind=PurchaseKind.CHECKOUT)
            .first()
        )
        if purchase is not None:
            if not purchase.stripe_checkout_session_id:
                purchase.stripe_checkout_session_id = session["id"]
                purchase.save(update_fields=["stripe_checkout_session_id"])
            return purchase
    logger.warning("checkout session %s belongs to no purchase of ours; ignored", session.get("id"))
    return None


def _on_session_paid(ev: StripeEvent, session: dict[str, Any], after: list[Any]) -> tuple[str, str]:
    purchase = _session_purchase(session)
    if purchase is None:
        return StripeEventStatus.IGNORED, ""
    if str(purchase.organization_id) != str(
        (session.get("metadata") or {}).get("switchyard_org", purchase.organization_id)
    ):
        logger.error("checkout session %s metadata names another organisation; ignored", session["id"])
        return StripeEventStatus.IGNORED, ""
    pi = session.get("payment_intent")
    pi_id = pi.get("id") if isinstance(pi, dict) else pi
    if session.get("payment_status") not in ("paid", "no_payment_required"):
        # Completed but unpaid: a delayed method (bank debit); async_payment_succeeded/_failed follows.
        if pi_id and not purchase.stripe_payment_intent_id:
            purchase.stripe_payment_intent_id = pi_id
            purchase.save(update_fields=["stripe_payment_intent_id"])
        return StripeEventStatus.PROCESSED, ""
    if purchase.status != PurchaseStatus.PAID:
        _session_amount_reconcile(purchase, session)
    _purchase_credit(purchase, source=session["id"], payment_intent=pi_id)
    if pi_id:
        org_id = purchase.organization_id
        after.append(lambda: payment_method_save(organization_id=org_id, payment_intent_id=pi_id))
    return StripeEventStatus.PROCESSED, ""


def _session_amount_reconcile(purchase: Purchase, session: dict[str, Any]) -> None:
    """Credit what Stripe says was paid, not what was asked for (a promotion code, a changed price).

    The goods paid for are the smaller of `amount_total` (after discounts, with any tax) and
    `amount_subtotal` (before both), so tax is never credited and a discount always counts; the card
    fee is taken off as we charged it. A mismatch is logged and recorded for the auditor, and the
    purchase then describes what was paid, so later refunds and disputes scale from that.
    """
    total = session.get("amount_total")
    if total is None or total == purchase.amount_cents:
        return
    subtotal = session.get("amount_subtotal")
    goods_cents = min(total, subtotal) if subtotal is not None else total
    fee_cents = _cents(from_units(purchase.fee_units))
    credited = max(goods_cents - fee_cents, 0) * (UNITS_PER_USD // 100)
    expected_cents, expected_units = purchase.amount_cents, purchase.credits_units
    detail = (
        f"Checkout session {session['id']} was paid {total} cents (subtotal {subtotal}); the purchase "
        f"asked for {expected_cents} cents ({fee_cents} of them the card fee). Credited "
        f"{from_units(credited)} USD instead of {from_units(expected_units)} USD."
    )
    logger.error("checkout amount mismatch for org %s: %s", purchase.organization_id, detail)
    finding_record(
        kind=FindingKind.CHECKOUT_MISMATCH,
        subject=session["id"],
        organization_id=purchase.organization_id,
        expected=expected_units,
        actual=credited,
        detail=detail,
    )
    purchase.credits_units, purchase.amount_cents = credited, total
    purchase.save(update_fields=["credits_units", "amount_cents"])


def _on_session_failed(ev: StripeEvent, session: dict[str, Any], after: list[Any]) -> tuple[str, str]:
    purchase = _session_purchase(session)
    if purchase is None:
        return StripeEventStatus.IGNORED, ""
    if purchase.status == PurchaseStatus.PENDING:
        purchase.status = (
            PurchaseStatus.EXPIRED if ev.type == "checkout.session.expired" else PurchaseStatus.FAILED
        )
        purchase.failure_message = (
            "The payment did not go through." if purchase.status == PurchaseStatus.FAILED else ""
        )
        purchase.save(update_fields=["status", "failure_message"])
    return StripeEventStatus.PROCESSED, ""


def payment_method_save(*, organization_id: int, payment_intent_id: str) -> None:
    """Remember the card a paid checkout saved (for auto top-up) and the charge id (for refunds)."""
    intent = stripe_client().v1.payment_intents.retrieve(payment_intent_id).to_dict()
    pm = intent.get("payment_method")
    pm_id = pm.get("id") if isinstance(pm, dict) else pm
    charge = intent.get("latest_charge")
    charge_id = charge.get("id") if isinstance(charge, dict) else charge
    if charge_id:
        Purchase.objects.filter(stripe_payment_intent_id=payment_intent_id, stripe_charge_id="").update(
            stripe_charge_id=charge_id
        )
    if pm_id and intent.get("setup_future_usage") == "off_session":
        profile = billing_profile_get_or_create(organization_id=organization_id)
        BillingProfile.objects.filter(pk=profile.pk).update(payment_method_id=pm_id)


def _purchase_for_charge(charge_id: str, payment_intent: str | None) -> Purchase | None:
    qs = Purchase.objects.select_for_update()
    if payment_intent:
        found = qs.filter(stripe_payment_intent_id=payment_intent).first()
        if found is not None:
            return found
    return qs.filter(stripe_charge_id=charge_id).first() if charge_id else None


def _id(value: Any) -> str | None:
    return value.get("id") if isinstance(value, dict) else value


def _on_charge_refunded(ev: StripeEvent, charge: dict[str, Any], after: list[Any]) -> tuple[str, str]:
    """Take back credits in proportion to what was refunded; `amount_refunded` is cumulative, so a
    replayed or late (smaller) figure changes nothing and the larger one wins whatever the order."""
    pi_id = _id(charge.get("payment_intent"))
    purchase = _purchase_for_charge(charge["id"], pi_id)
    if purchase is None or purchase.status != PurchaseStatus.PAID:
        return StripeEventStatus.DEFERRED, pi_id or charge["id"]
    refunded_cents = int(charge.get("amount_refunded") or 0)
    charged_cents = int(charge.get("amount") or purchase.amount_cents)
    if refunded_cents <= purchase.refunded_cents:
        return StripeEventStatus.PROCESSED, ""
    if refunded_cents >= charged_cents:
        target = purchase.credits_units
    else:
        target = purchase.credits_units * refunded_cents // charged_cents
    step = target - purchase.refunded_units
    Refund.objects.create(
        purchase=purchase,
        organization_id=purchase.organization_id,
        stripe_charge_id=charge["id"],
        stripe_event_id=ev.id,
        cumulative_cents=refunded_cents,
        amount_units=step,
    )
    if step:
        ledger_append(
            organization_id=purchase.organization_id,
            kind=EntryKind.REFUND,
            amount_units=-step,
            source=f"{charge['id']}:{refunded_cents}",
            reason=f"Refund of ${cents_str(refunded_cents, ',')} of ${cents_str(charged_cents, ',')}",
        )
    purchase.refunded_cents = refunded_cents
    purchase.refunded_units = target
    purchase.stripe_charge_id = purchase.stripe_charge_id or charge["id"]
    purchase.save(update_fields=["refunded_cents", "refunded_units", "stripe_charge_id"])
    return StripeEventStatus.PROCESSED, ""


def _on_dispute(ev: StripeEvent, dispute: dict[str, Any], after: list[Any]) -> tuple[str, str]:
    """Record the dispute, hold the disputed credits against spending, and flag the organisation (no
    more purchases or auto top-ups).

    The hold is a ledger entry (kind `dispute`, negative), so the balance every reader derives, the
    Redis mirror the hot path's holds reserve from included, leaves the disputed credits out at once.
    It is the disputed share of what the purchase credited (less anything already refunded).
    """
    charge_id = _id(dispute.get("charge")) or ""
    pi_id = _id(dispute.get("payment_intent"))
    purchase = _purchase_for_charge(charge_id, pi_id)
    if purchase is None:
        return StripeEventStatus.DEFERRED, pi_id or charge_id
    disputed_cents = int(dispute.get("amount") or purchase.amount_cents)
    if purchase.amount_cents <= 0 or disputed_cents >= purchase.amount_cents:
        share = purchase.credits_units
    else:
        share = purchase.credits_units * disputed_cents // purchase.amount_cents
    held = max(min(share, purchase.credits_units - purchase.refunded_units), 0)
    try:
        with transaction.atomic():
            record = Dispute.objects.create(
                stripe_dispute_id=dispute["id"],
                organization_id=purchase.organization_id,
                purchase=purchase,
                stripe_charge_id=charge_id,
                amount_cents=disputed_cents,
                reason=str(dispute.get("reason") or "")[:64],
                status=str(dispute.get("status") or "")[:64],
                held_units=held,
            )
    except IntegrityError:
        return StripeEventStatus.PROCESSED, ""
    if held:
        ledger_append(
            organization_id=purchase.organization_id,
            kind=EntryKind.DISPUTE,
            amount_units=-held,
            source=f"{record.stripe_dispute_id}:hold",
            reason=f"Held while a payment dispute of ${cents_str(disputed_cents, ',')} is open",
        )
    Purchase.objects.filter(pk=purchase.pk).update(disputed=True)
    Organization.objects.filter(pk=purchase.organization_id).update(flagged=True)
    BillingProfile.objects.filter(pk=purchase.organization_id).update(
        auto_topup_enabled=False, auto_topup_notice="Auto top-up is off while a payment dispute is open."
    )
    logger.warning(
        "dispute %s on org %s: organisation flagged, %s USD held",
        dispute["id"],
        purchase.organization_id,
        from_units(held),
    )
    # A close that arrived before this event waits for it.
    transaction.on_commit(lambda: stripe_events_release(ref=record.stripe_dispute_id))
    return StripeEventStatus.PROCESSED, ""


# Closed dispute statuses where the money stays with us (Stripe: `won`; an inquiry that never became
# a chargeback closes as `warning_closed`). Anything else closed (`lost`) reverses the purchase.
DISPUTE_KEPT = ("won", "warning_closed")


def _on_dispute_closed(ev: StripeEvent, dispute: dict[str, Any], after: list[Any]) -> tuple[str, str]:
    """Release the dispute's hold; when it was lost, take the credits back for good (a refund entry).

    The organisation stays flagged after a loss (a person decides what next) and is unflagged once it
    has no dispute left open otherwise.
    """
    record = Dispute.objects.select_for_update().filter(stripe_dispute_id=dispute["id"]).first()
    if record is None:
        return StripeEventStatus.DEFERRED, dispute["id"]
    if record.closed_at is not None:
        return StripeEventStatus.PROCESSED, ""
    status = str(dispute.get("status") or "")[:64]
    org_id = record.organization_id
    assert org_id is not None  # disputes are only recorded against a purchase
    if record.held_units:
        ledger_append(
            organization_id=org_id,
            kind=EntryKind.DISPUTE,
            amount_units=record.held_units,
            source=f"{record.stripe_dispute_id}:release",
            reason=f"Payment dispute closed ({status or 'closed'}): hold released",
        )
    lost = status not in DISPUTE_KEPT
    if lost and record.held_units:
        ledger_append(
            organization_id=org_id,
            kind=EntryKind.REFUND,
            amount_units=-record.held_units,
            source=f"{record.stripe_dispute_id}:lost",
            reason=f"Payment dispute lost: ${cents_str(record.amount_cents, ',')} returned to the card holder",
        )
    record.status, record.closed_at = status, timezone.now()
    record.save(update_fields=["status", "closed_at"])
    if not lost and not Dispute.objects.filter(organization_id=org_id, closed_at__isnull=True).exists():
        Organization.objects.filter(pk=org_id).update(flagged=False)
    logger.warning("dispute %s on org %s closed: %s", record.stripe_dispute_id, org_id, status)
    return StripeEventStatus.PROCESSED, ""


def _on_intent(ev: StripeEvent, intent: dict[str, Any], after: list[Any]) -> tuple[str, str]:
    """Auto top-up outcomes reported by webhook (the synchronous answer may have been lost)."""
    meta = intent.get("metadata") or {}
    purchase = (
        Purchase.objects.select_for_update()
        .filter(stripe_payment_intent_id=intent["id"], kind=PurchaseKind.AUTO_TOPUP)
        .first()
    )
    if purchase is None and meta.get("switchyard_purchase"):
        purchase = (
            Purchase.objects.select_for_update()
            .filter(pk=int(meta["switchyard_purchase"]), kind=PurchaseKind.AUTO_TOPUP)
            .first()
        )
    if purchase is None:
        return StripeEventStatus.IGNORED, ""  # a checkout's intent: the session events handle it
    if ev.type == "payment_intent.succeeded":
        _purchase_credit(purchase, source=intent["id"], payment_intent=intent["id"])
        BillingProfile.objects.filter(pk=purchase.organization_id).update(
            auto_topup_failures=0, auto_topup_notice=""
        )
    elif purchase.status == PurchaseStatus.PENDING:
        error = intent.get("last_payment_error") or {}
        _auto_topup_failed(
            purchase, code=str(error.get("code") or "payment_failed"), message=str(error.get("message") or "")
        )
    return StripeEventStatus.PROCESSED, ""


_EVENT_HANDLERS: dict[str, Callable[[StripeEvent, dict[str, Any], list[Any]], tuple[str, str]]] = {
    "checkout.session.completed": _on_session_paid,
    "checkout.session.async_payment_succeeded": _on_session_paid,
    "checkout.session.async_payment_failed": _on_session_failed,
    "checkout.session.expired": _on_session_failed,
    "charge.refunded": _on_charge_refunded,
    "charge.dispute.created": _on_dispute,
    "charge.dispute.closed": _on_dispute_closed,
    "payment_intent.succeeded": _on_intent,
    "payment_intent.payment_failed": _on_intent,
}


# ---- auto top-up ---------------------------------------------------------------------------------


def organization_auto_topup_set(
    *, organization: Organization, threshold_usd: Decimal | None, amount_usd: Decimal | None
) -> BillingProfile:
    """Auto top-up: both set (on), or both cleared (off). Turning it on again clears past failures."""
    if (threshold_usd is None) != (amount_usd is None):
        raise BadRequest("Set both the threshold and the amount, or neither to turn auto top-up off.")
    profile = billing_profile_get_or_create(organization_id=organization.pk)
    if amount_usd is None or threshold_usd is None:
        BillingProfile.objects.filter(pk=profile.pk).update(auto_topup_enabled=False, auto_topup_notice="")
    else:
        if threshold_usd < 0:
            raise BadRequest("The threshold must not be negative.")
        amount = purchase_amount_check(amount_usd)
        organization.refresh_from_db(fields=["flagged"])
        if organization.flagged:
            raise Forbidden("Auto top-up is blocked for this organisation because of a payment dispute.")
        BillingProfile.objects.filter(pk=profile.pk).update(
            auto_topup_enabled=True,
            auto_topup_threshold_units=to_units(threshold_usd),
            auto_topup_amount_units=to_units(amount),
            auto_topup_failures=0,
            auto_topup_notice="",
        )
    profile.refresh_from_db()
    return profile


STALE_PENDING = timedelta(minutes=2)


def auto_topup_run(*, organization_id: int) -> Purchase | None:
    """Charge the saved card once if the balance is below the threshold.

    Concurrent callers serialise on the billing profile row; the one that creates the pending
    purchase charges, the rest see it and stop (and the partial unique index backs that up). A
    pending purchase left by a dead worker is resumed with the same Stripe idempotency key, so it
    can never become a second charge.
    """
    if not stripe_enabled():
        return None
    now = timezone.now()
    with transaction.atomic():
        profile = (
            BillingProfile.objects.select_for_update()
            .select_related("organization")
            .filter(pk=organization_id)
            .first()
        )
        if profile is None:
            return None
        pending = Purchase.objects.filter(
            organization_id=organization_id, kind=PurchaseKind.AUTO_TOPUP, status=PurchaseStatus.PENDING
        ).first()
        if pending is not None:
            if pending.created_at > now - STALE_PENDING:
                return None
            purchase = pending  # resume: same idempotency key, same PaymentIntent
        else:
            org = profile.organization
            if (
                not profile.auto_topup_enabled
                or not profile.payment_method_id
                or not profile.stripe_customer_id
                or org.flagged
                or profile.auto_topup_threshold_units is None
                or profile.auto_topup_amount_units is None
                or org.balance_units >= profile.auto_topup_threshold_units
            ):
                return None
            if (
                profile.auto_topup_failures
                and profile.auto_topup_last_attempt_at
                and profile.auto_topup_last_attempt_at
                > now - timedelta(seconds=settings.SWITCHYARD_AUTO_TOPUP_RETRY_SECONDS)
            ):
                return None
            amount = from_units(profile.auto_topup_amount_units).quantize(Decimal("0.01"))
            fee = purchase_fee_usd(amount_usd=amount)
            purchase = Purchase.objects.create(
                organization_id=organization_id,
                kind=PurchaseKind.AUTO_TOPUP,
                credits_units=to_units(amount),
                fee_units=to_units(fee),
                amount_cents=_cents(amount) + _cents(fee),
                idempotency_key=f"switchyard-topup-{uuid.uuid4()}",
            )
            profile.auto_topup_last_attempt_at = now
            profile.save(update_fields=["auto_topup_last_attempt_at"])
    return _auto_topup_charge(purchase, profile)


def _auto_topup_charge(purchase: Purchase, profile: BillingProfile) -> Purchase:
    import stripe  # lazily: the web process only needs it for purchases (~15 MB of modules)

    try:
        intent = stripe_client().v1.payment_intents.create(
            params={
                "amount": purchase.amount_cents,
                "currency": purchase.currency,
                "customer": profile.stripe_customer_id,
                "payment_method": profile.payment_method_id,
                "off_session": True,
                "confirm": True,
                "description": "Switchyard credits (auto top-up)",
                "metadata": {
                    "switchyard_org": str(purchase.organization_id),
                    "switchyard_purchase": str(purchase.pk),
                },
            },
            options={"idempotency_key": purchase.idempotency_key},
        )
    except stripe.CardError as exc:
        body = (exc.json_body or {}).get("error", {}) if isinstance(exc.json_body, dict) else {}
        pi_id = _id(body.get("payment_intent"))
        with transaction.atomic():
            locked = Purchase.objects.select_for_update().get(pk=purchase.pk)
            if pi_id and not locked.stripe_payment_intent_id:
                locked.stripe_payment_intent_id = pi_id
                locked.save(update_fields=["stripe_payment_intent_id"])
            if locked.status == PurchaseStatus.PENDING:
                _auto_topup_failed(
                    locked, code=str(exc.code or "card_error"), message=str(exc.user_message or "")
                )
        return Purchase.objects.get(pk=purchase.pk)
    except stripe.StripeError:
        # Network trouble or a Stripe outage: stay pending; the retry sweep resumes it with the same key.
        logger.exception("auto top-up for org %s could not reach Stripe", purchase.organization_id)
        return purchase
    with transaction.atomic():
        locked = Purchase.objects.select_for_update().get(pk=purchase.pk)
        if not locked.stripe_payment_intent_id:
            locked.stripe_payment_intent_id = intent.id
            locked.save(update_fields=["stripe_payment_intent_id"])
        if intent.status == "succeeded":
            _purchase_credit(locked, source=intent.id, payment_intent=intent.id)
            BillingProfile.objects.filter(pk=locked.organization_id).update(
                auto_topup_failures=0, auto_topup_notice=""
            )
        elif (
            intent.status in ("requires_payment_method", "canceled")
            and locked.status == PurchaseStatus.PENDING
        ):
            error = intent.to_dict().get("last_payment_error") or {}
            _auto_topup_failed(
                locked,
                code=str(error.get("code") or "payment_failed"),
                message=str(error.get("message") or ""),
            )
        # requires_action / processing: the payment_intent.* webhook finishes it.
    return Purchase.objects.get(pk=purchase.pk)


def _auto_topup_failed(purchase: Purchase, *, code: str, message: str) -> None:
    """Record a failed automatic charge (caller holds the purchase lock); turn auto top-up off after
    SWITCHYARD_AUTO_TOPUP_MAX_FAILURES failures, or at once when the bank wants the customer present."""
    purchase.status = PurchaseStatus.FAILED
    purchase.failure_code = code[:64]
    purchase.failure_message = (message or "The card was declined.")[:300]
    purchase.save(update_fields=["status", "failure_code", "failure_message"])
    profile = BillingProfile.objects.select_for_update().get(pk=purchase.organization_id)
    profile.auto_topup_failures += 1
    turned_off = code == "authentication_required" or (
        profile.auto_topup_failures >= settings.SWITCHYARD_AUTO_TOPUP_MAX_FAILURES
    )
    notice = f"Auto top-up of ${cents_str(purchase.amount_cents, ',')} failed: {purchase.failure_message}"
    if code == "authentication_required":
        notice += " Your bank asks you to confirm this payment: buy credits once on the credits page."
    if turned_off:
        profile.auto_topup_enabled = False
        notice += " Auto top-up is now off; turn it on again on the credits page."
    profile.auto_topup_notice = notice[:300]
    profile.save(update_fields=["auto_topup_failures", "auto_topup_enabled", "auto_topup_notice"])
    org_id = purchase.organization_id
    transaction.on_commit(
        lambda: billing_notice_send(organization_id=org_id, subject="Auto top-up failed", body=notice)
    )


def billing_notice_send(*, organization_id: int, subject: str, body: str) -> int:
    """Email the organisation's owners and admins; returns how many were sent."""
    emails = list(
        Membership.objects.filter(organization_id=organization_id, role__in=MANAGER_ROLES).values_list(
            "user__email", flat=True
        )
    )
    if not emails:
        return 0
    try:
        return send_mail(f"[Switchyard] {subject}", body, None, emails, fail_silently=False)
    except Exception:
        logger.exception("could not send billing notice to org %s", organization_id)
        return 0
