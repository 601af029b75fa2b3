"""Stripe under hostile or surprising input: signed webhooks whose bodies are not the events we handle
get a 400 (never a 500), a dispute holds the disputed credits against spending until it is decided
(won: released, lost: reversed in the ledger), and a Checkout that was paid a different amount is
credited from what Stripe says was paid, with the mismatch recorded for the auditor. Idempotent on
the Stripe event id throughout."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from accounts.models import Organization
from billing.models import AuditFinding, EntryKind, LedgerEntry, StripeEvent, StripeEventStatus
from billing.selectors import ledger_balance_units
from switchyard.money import to_units
from tests.billing.conftest import WEBHOOK_SECRET, wait_for
from tests.billing.test_purchases import _deliver, _deliver_and_wait, _hook, _session
from tests.conftest import flush_usage
from tests.factories import make_key, make_org
from tests.fakes.stripe_upstream import sign

pytestmark = pytest.mark.django_db(transaction=True)


def _post_signed(live, raw: bytes) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.post(
        _hook(live),
        content=raw,
        headers={"Content-Type": "application/json", "Stripe-Signature": sign(raw, WEBHOOK_SECRET)},
        timeout=30,
    )


def _event(type_: str, obj: object, **top: object) -> dict:
    return {
        "id": f"evt_hostile_{time.monotonic_ns()}",
        "object": "event",
        "type": type_,
        "created": 1,
        "data": {"object": obj},
        **top,
    }


BODIES = [
    b"[]",
    b"{}",
    b'"event"',
    b"null",
    b"123",
    json.dumps({"id": "evt_no_type", "object": "event", "data": {"object": {}}}).encode(),
    json.dumps({"id": ["evt"], "type": "charge.refunded", "data": {"object": {"id": "ch_1"}}}).encode(),
    json.dumps({"id": "evt_t", "type": 7, "data": {"object": {}}}).encode(),
    json.dumps({"id": "evt_t2", "type": ["charge.refunded"], "data": {}}).encode(),
    json.dumps(_event("charge.refunded", [])).encode(),
    json.dumps(_event("charge.refunded", {"id": 12})).encode(),
    json.dumps(_event("charge.refunded", {"id": "ch_1", "amount_refunded": "lots"})).encode(),
    json.dumps(_event("charge.refunded", {"id": "ch_1", "amount_refunded": 1e30})).encode(),
    json.dumps(
        _event("charge.dispute.created", {"id": "dp_1", "amount": {"v": 1}, "charge": "ch_1"})
    ).encode(),
    json.dumps(_event("charge.dispute.created", {"id": "dp_1", "amount": 5, "charge": ["ch_1"]})).encode(),
    json.dumps(_event("checkout.session.completed", {"id": "cs_1", "amount_total": "20"})).encode(),
    json.dumps(_event("checkout.session.completed", {"id": "cs_1", "metadata": "x"})).encode(),
    json.dumps(
        _event("checkout.session.completed", {"id": "cs_1", "metadata": {"switchyard_purchase": "x"}})
    ).encode(),
    json.dumps(_event("payment_intent.succeeded", {"id": "pi_1", "metadata": []})).encode(),
    json.dumps({**_event("charge.refunded", {"id": "ch_1"}), "created": "yesterday"}).encode(),
    json.dumps({**_event("charge.refunded", {"id": "ch_1"}), "data": []}).encode(),
    json.dumps({**_event("charge.refunded", {"id": "ch_1"}), "data": None}).encode(),
]


@pytest.mark.parametrize("raw", BODIES, ids=range(len(BODIES)))
def test_signed_bodies_that_are_not_our_events_are_400_json(live, fake_stripe, raw):
    response = _post_signed(live, raw)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == 400 and error["message"]
    assert not StripeEvent.objects.exists()


def _paid(live, fake_stripe, org: Organization, amount: str = "10") -> str:  # type: ignore[no-untyped-def]
    session_id = _session(org, amount)
    completed, _ = fake_stripe.checkout_pay(session_id)
    _deliver_and_wait(live, completed)
    return session_id


def _chat(live, secret: str) -> int:  # type: ignore[no-untyped-def]
    return httpx.post(
        f"{live.api}/chat/completions",
        json={"model": "billing/flat", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    ).status_code


def _spendable(live, secret: str) -> int:  # type: ignore[no-untyped-def]
    """What holds can reserve: a request goes through (200) or is refused for credit (402)."""
    return _chat(live, secret)


def test_a_dispute_holds_the_credits_until_it_is_won(live, fake_stripe, billing_catalog):
    org = make_org(credits=None)
    _, secret = make_key(org)
    session_id = _paid(live, fake_stripe, org)
    assert _spendable(live, secret) == 200
    dispute = fake_stripe.dispute(fake_stripe.charge_for_session(session_id)["id"])
    _deliver_and_wait(live, dispute)
    _deliver(live, dispute)  # replayed: held once
    held = LedgerEntry.objects.filter(organization=org, kind=EntryKind.DISPUTE)
    assert held.count() == 1 and held.get().amount_units == -to_units("10")
    # The disputed credits are no longer spendable, through the hot path's holds too.
    wait_for(lambda: _spendable(live, secret) == 402, what="the disputed credits to be held")
    flush_usage()
    balance = ledger_balance_units(organization_id=org.pk)
    assert balance < 0 < balance + to_units("10")  # what was spent before the dispute stays spent

    won = fake_stripe.dispute_close(dispute["data"]["object"]["id"], won=True)
    _deliver_and_wait(live, won)
    _deliver(live, won)
    entries = LedgerEntry.objects.filter(organization=org, kind=EntryKind.DISPUTE).order_by("id")
    assert [e.amount_units for e in entries] == [-to_units("10"), to_units("10")]
    assert ledger_balance_units(organization_id=org.pk) == balance + to_units("10")
    wait_for(lambda: _spendable(live, secret) == 200, what="the released credits to be spendable")


def test_a_lost_dispute_reverses_the_credits_in_the_ledger(live, fake_stripe, billing_catalog):
    org = make_org(credits="2")
    _, secret = make_key(org)
    session_id = _paid(live, fake_stripe, org, "10")
    dispute = fake_stripe.dispute(fake_stripe.charge_for_session(session_id)["id"])
    _deliver_and_wait(live, dispute)
    assert ledger_balance_units(organization_id=org.pk) == to_units("2")
    assert _spendable(live, secret) == 200  # the granted $2 is not disputed
    lost = fake_stripe.dispute_close(dispute["data"]["object"]["id"], won=False)
    _deliver_and_wait(live, lost)
    _deliver(live, lost)
    kinds = list(
        LedgerEntry.objects.filter(organization=org, kind__in=[EntryKind.DISPUTE, EntryKind.REFUND])
        .order_by("id")
        .values_list("kind", "amount_units")
    )
    # The hold is released and the purchase reversed for good: net, the disputed $10 are gone.
    assert kinds == [
        (EntryKind.DISPUTE, -to_units("10")),
        (EntryKind.DISPUTE, to_units("10")),
        (EntryKind.REFUND, -to_units("10")),
    ]
    flush_usage()
    flushed = ledger_balance_units(organization_id=org.pk)
    assert flushed < to_units("2") and flushed > to_units("1")
    assert StripeEvent.objects.get(pk=lost["id"]).status == StripeEventStatus.PROCESSED


def test_a_dispute_closed_before_it_was_seen_open_is_applied_in_order(live, fake_stripe):
    org = make_org(credits=None)
    session_id = _paid(live, fake_stripe, org, "10")
    dispute = fake_stripe.dispute(fake_stripe.charge_for_session(session_id)["id"])
    won = fake_stripe.dispute_close(dispute["data"]["object"]["id"], won=True)
    response = _deliver(live, won)
    assert response.status_code == 200
    wait_for(lambda: StripeEvent.objects.filter(pk=won["id"]).exclude(status="received").exists())
    _deliver_and_wait(live, dispute)
    wait_for(lambda: _processed_or_ignored(won["id"]), what="the deferred close")
    assert ledger_balance_units(organization_id=org.pk) == to_units("10")


def _processed_or_ignored(event_id: str) -> bool:
    return StripeEvent.objects.filter(
        pk=event_id, status__in=[StripeEventStatus.PROCESSED, StripeEventStatus.IGNORED]
    ).exists()


def test_checkout_paid_less_is_credited_what_was_paid_and_audited(live, fake_stripe):
    org = make_org(credits=None)
    session_id = _session(org, "20")  # $20 of credits + $1.10 fee = 2110 cents expected
    fake_stripe.discount(session_id, amount_off=1000)  # the customer paid 1110 cents
    completed, _ = fake_stripe.checkout_pay(session_id)
    _deliver_and_wait(live, completed)
    _deliver(live, completed)
    entry = LedgerEntry.objects.get(organization=org, kind=EntryKind.PURCHASE)
    assert entry.amount_units == to_units("10.00")  # 1110 paid - 110 fee
    assert ledger_balance_units(organization_id=org.pk) == to_units("10.00")
    finding = AuditFinding.objects.get(kind="checkout_mismatch", subject=session_id)
    assert finding.organization_id == org.pk
    assert finding.expected_units == to_units("20") and finding.actual_units == to_units("10")
    assert "2110" in finding.detail and "1110" in finding.detail


def test_checkout_paid_nothing_above_the_fee_credits_nothing(live, fake_stripe):
    org = make_org(credits=None)
    session_id = _session(org, "20")
    fake_stripe.discount(session_id, amount_off=2050)  # 60 cents paid, less than the 110 cent fee
    completed, _ = fake_stripe.checkout_pay(session_id)
    _deliver_and_wait(live, completed)
    assert ledger_balance_units(organization_id=org.pk) == 0
    assert AuditFinding.objects.filter(kind="checkout_mismatch", subject=session_id).exists()


def test_checkout_paid_exactly_is_not_a_finding(live, fake_stripe):
    org = make_org(credits=None)
    session_id = _paid(live, fake_stripe, org, "20")
    assert ledger_balance_units(organization_id=org.pk) == to_units("20")
    assert not AuditFinding.objects.filter(subject=session_id).exists()
