"""Auto top-up: one off-session charge when the balance falls below the threshold, even under concurrency;
declines and bank-authentication requests are handled, counted, and reported to the organisation."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.db import close_old_connections
from django.utils import timezone

from accounts.models import Membership, Organization, Role
from billing.models import BillingProfile, EntryKind, LedgerEntry, Purchase, PurchaseKind, PurchaseStatus
from billing.selectors import ledger_balance_units
from billing.services import auto_topup_run, organization_auto_topup_set, stripe_customer_ensure, usage_charge
from billing.stripe_client import stripe_client
from switchyard.errors import BadRequest
from switchyard.money import to_units
from tests.billing.conftest import wait_for
from tests.factories import UserFactory, make_key, make_org

pytestmark = pytest.mark.django_db(transaction=True)


def _balance(org: Organization) -> int:
    return Organization.objects.values_list("balance_units", flat=True).get(pk=org.pk)


def _topup_org(
    fake, *, credits: str = "4", card: str = "pm_card_topup", threshold: str = "5", amount: str = "20"
):  # type: ignore[no-untyped-def]
    org = make_org(credits=credits)
    owner = UserFactory()
    Membership.objects.create(user=owner, organization=org, role=Role.OWNER)
    stripe_customer_ensure(organization=org)
    BillingProfile.objects.filter(pk=org.pk).update(payment_method_id=card)
    organization_auto_topup_set(
        organization=org, threshold_usd=Decimal(threshold), amount_usd=Decimal(amount)
    )
    return org, owner


def test_below_threshold_charges_the_saved_card_off_session(fake_stripe):
    org, _ = _topup_org(fake_stripe)
    purchase = auto_topup_run(organization_id=org.pk)
    assert purchase is not None and purchase.status == PurchaseStatus.PAID
    (sent,) = [p for p in fake_stripe.intents_created() if p["metadata"]["switchyard_org"] == str(org.pk)]
    assert sent["off_session"] == "true" and sent["confirm"] == "true"
    assert sent["payment_method"] == "pm_card_topup" and sent["amount"] == "2110"  # $20 + $1.10 fee
    assert sent["customer"] == BillingProfile.objects.get(pk=org.pk).stripe_customer_id
    assert _balance(org) == to_units("24") == ledger_balance_units(organization_id=org.pk)
    entry = LedgerEntry.objects.get(organization=org, kind=EntryKind.PURCHASE)
    assert entry.source == purchase.stripe_payment_intent_id
    # Above the threshold now: nothing more happens.
    assert auto_topup_run(organization_id=org.pk) is None
    assert Purchase.objects.filter(organization=org).count() == 1


def test_concurrent_triggers_charge_once(fake_stripe):
    org, _ = _topup_org(fake_stripe, card="pm_card_race")
    fake_stripe.latency = 0.2  # keep the first charge in flight while the others arrive
    barrier = threading.Barrier(12)
    errors: list[BaseException] = []

    def trigger() -> None:
        try:
            barrier.wait()
            auto_topup_run(organization_id=org.pk)
        except BaseException as exc:
            errors.append(exc)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=trigger) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    charges = [p for p in fake_stripe.intents_created() if p["payment_method"] == "pm_card_race"]
    assert len(charges) == 1
    assert Purchase.objects.filter(organization=org, kind=PurchaseKind.AUTO_TOPUP).count() == 1
    assert _balance(org) == to_units("24")


def test_usage_through_the_worker_triggers_one_topup(fake_stripe, live, celery_worker_process):
    """Usage lands in the ledger (Celery in full mode) and pushes the balance below the threshold
    many times over; the auto top-up tasks that follow charge the card exactly once."""
    org, _ = _topup_org(fake_stripe, credits="6", card="pm_card_usage")
    from billing.usage import usage_events_apply

    key, _ = make_key(org)
    events = [
        {
            "gen": f"gen-topup-{org.pk}-{i}",
            "org": org.pk,
            "key": key.pk,
            "model": "switchyard/sim-1",
            "status": "success",
            "cost": to_units("0.5"),
            "created": timezone.now().timestamp(),
        }
        for i in range(6)
    ]
    threads = [threading.Thread(target=usage_events_apply, args=([ev],)) for ev in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(
        lambda: Purchase.objects.filter(organization=org, status=PurchaseStatus.PAID).exists(), what="top-up"
    )
    wait_for(lambda: _balance(org) == to_units("6") - 6 * to_units("0.5") + to_units("20"))
    import time

    time.sleep(1.0)  # any straggling task would charge again within this time
    assert len([p for p in fake_stripe.intents_created() if p["payment_method"] == "pm_card_usage"]) == 1


def test_declines_are_counted_notified_and_turn_auto_topup_off(fake_stripe, settings):
    settings.SWITCHYARD_AUTO_TOPUP_MAX_FAILURES = 2
    settings.SWITCHYARD_AUTO_TOPUP_RETRY_SECONDS = 3600
    org, owner = _topup_org(fake_stripe, card="pm_card_declined")
    fake_stripe.card_outcomes["pm_card_declined"] = "card_declined"

    first = auto_topup_run(organization_id=org.pk)
    assert (
        first is not None and first.status == PurchaseStatus.FAILED and first.failure_code == "card_declined"
    )
    profile = BillingProfile.objects.get(pk=org.pk)
    assert profile.auto_topup_failures == 1 and profile.auto_topup_enabled
    assert "declined" in profile.auto_topup_notice
    assert (
        mail.outbox
        and mail.outbox[-1].to == [owner.email]
        and "Auto top-up failed" in mail.outbox[-1].subject
    )
    assert _balance(org) == to_units("4")

    # Within the retry interval nothing is charged again.
    assert auto_topup_run(organization_id=org.pk) is None
    BillingProfile.objects.filter(pk=org.pk).update(
        auto_topup_last_attempt_at=timezone.now() - timedelta(hours=2)
    )
    second = auto_topup_run(organization_id=org.pk)
    assert second is not None and second.status == PurchaseStatus.FAILED
    profile.refresh_from_db()
    assert profile.auto_topup_failures == 2 and not profile.auto_topup_enabled
    assert "Auto top-up is now off" in profile.auto_topup_notice
    BillingProfile.objects.filter(pk=org.pk).update(auto_topup_last_attempt_at=None)
    assert auto_topup_run(organization_id=org.pk) is None  # off: no third attempt
    assert len([p for p in fake_stripe.intents_created() if p["payment_method"] == "pm_card_declined"]) == 2

    # Turning it back on clears the failures; a working card then tops up.
    fake_stripe.card_outcomes["pm_card_declined"] = "ok"
    organization_auto_topup_set(organization=org, threshold_usd=Decimal("5"), amount_usd=Decimal("20"))
    assert auto_topup_run(organization_id=org.pk).status == PurchaseStatus.PAID  # type: ignore[union-attr]
    assert _balance(org) == to_units("24")


def test_authentication_required_turns_auto_topup_off_at_once(fake_stripe, db):
    org, _ = _topup_org(fake_stripe, card="pm_card_3ds")
    fake_stripe.card_outcomes["pm_card_3ds"] = "authentication_required"
    purchase = auto_topup_run(organization_id=org.pk)
    assert purchase is not None and purchase.failure_code == "authentication_required"
    assert purchase.stripe_payment_intent_id  # the declined intent is kept for support
    profile = BillingProfile.objects.get(pk=org.pk)
    assert not profile.auto_topup_enabled and "confirm this payment" in profile.auto_topup_notice


def test_a_pending_topup_left_by_a_dead_worker_is_resumed_without_a_second_charge(fake_stripe):
    org, _ = _topup_org(fake_stripe, card="pm_card_resume")
    profile = BillingProfile.objects.get(pk=org.pk)
    purchase = Purchase.objects.create(
        organization=org,
        kind=PurchaseKind.AUTO_TOPUP,
        credits_units=to_units("20"),
        fee_units=to_units("1.10"),
        amount_cents=2110,
        idempotency_key="switchyard-topup-dead-worker",
    )
    # The worker reached Stripe, then died before writing anything.
    stripe_client().v1.payment_intents.create(
        params={
            "amount": 2110,
            "currency": "usd",
            "customer": profile.stripe_customer_id,
            "payment_method": "pm_card_resume",
            "off_session": True,
            "confirm": True,
            "description": "Switchyard credits (auto top-up)",
            "metadata": {"switchyard_org": str(org.pk), "switchyard_purchase": str(purchase.pk)},
        },
        options={"idempotency_key": purchase.idempotency_key},
    )
    assert auto_topup_run(organization_id=org.pk) is None  # too fresh to resume: it may still be running
    Purchase.objects.filter(pk=purchase.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    resumed = auto_topup_run(organization_id=org.pk)
    assert resumed is not None and resumed.pk == purchase.pk and resumed.status == PurchaseStatus.PAID
    intents = {
        pi for pi, obj in fake_stripe.payment_intents.items() if obj["payment_method"] == "pm_card_resume"
    }
    assert len(intents) == 1 and resumed.stripe_payment_intent_id in intents
    assert _balance(org) == to_units("24")


def test_settings_validation_and_nothing_without_a_card(fake_stripe):
    org = make_org(credits="1")
    with pytest.raises(BadRequest):
        organization_auto_topup_set(organization=org, threshold_usd=Decimal("5"), amount_usd=None)
    with pytest.raises(BadRequest):
        organization_auto_topup_set(organization=org, threshold_usd=Decimal("5"), amount_usd=Decimal("1"))
    organization_auto_topup_set(organization=org, threshold_usd=Decimal("5"), amount_usd=Decimal("10"))
    assert auto_topup_run(organization_id=org.pk) is None  # no saved card yet
    usage_charge(organization_id=org.pk, generation_id="gen-nocard", cost_units=1, api_key_id=None, model="m")
    assert not Purchase.objects.filter(organization=org).exists()
