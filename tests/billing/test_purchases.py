"""Stripe purchases end to end: dashboard checkout → fake Stripe → signed webhooks → ledger, exactly once.

Runs against the live server (webhooks over real HTTP) and, in full mode, the real Celery worker
that applies the recorded events.
"""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import Organization
from billing.models import (
    BillingProfile,
    Dispute,
    EntryKind,
    LedgerEntry,
    Purchase,
    PurchaseStatus,
    Refund,
    StripeEvent,
    StripeEventStatus,
)
from billing.selectors import ledger_balance_units
from billing.services import checkout_session_create
from switchyard.errors import BadRequest, Forbidden
from switchyard.money import to_units
from tests.billing.conftest import WEBHOOK_SECRET, owner_client, wait_for
from tests.factories import make_org
from tests.fakes.stripe_upstream import FakeStripe, sign

pytestmark = pytest.mark.django_db(transaction=True)


def _balance(org: Organization) -> int:
    return Organization.objects.values_list("balance_units", flat=True).get(pk=org.pk)


def _hook(live) -> str:  # type: ignore[no-untyped-def]
    return f"{live.url}/api/v1/stripe/webhook"


def _deliver(live, event, **kw):  # type: ignore[no-untyped-def]
    response = FakeStripe.deliver(_hook(live), event, secret=WEBHOOK_SECRET, **kw)
    return response


def _session(org: Organization, amount: str = "20") -> str:
    url = checkout_session_create(
        organization=org,
        amount_usd=Decimal(amount),
        user=None,
        success_url="http://testserver/dashboard/credits/?checkout=success",
        cancel_url="http://testserver/dashboard/credits/?checkout=cancelled",
    )
    return url.rsplit("/", 1)[1]


def _processed(event_id: str) -> bool:
    return StripeEvent.objects.filter(
        pk=event_id, status__in=[StripeEventStatus.PROCESSED, StripeEventStatus.IGNORED]
    ).exists()


def _deliver_and_wait(live, event) -> None:  # type: ignore[no-untyped-def]
    response = _deliver(live, event)
    assert response.status_code == 200, response.text
    wait_for(lambda: _processed(event["id"]), what=f"{event['type']} to be applied")


def test_dashboard_buy_checkout_and_webhook_credit_once(live, fake_stripe):
    org = make_org(credits=None)
    client, user = owner_client(org)
    page = client.get(reverse("credits")).content.decode()
    assert "Continue to checkout" in page and "$1.10" in page  # the fee is shown before paying

    response = client.post(reverse("credits-buy"), {"amount": "20"})
    assert response.status_code == 302
    assert response["Location"].startswith(fake_stripe.base_url + "/pay/cs_test_")
    session_id = response["Location"].rsplit("/", 1)[1]

    purchase = Purchase.objects.get(stripe_checkout_session_id=session_id)
    assert purchase.status == PurchaseStatus.PENDING and purchase.created_by == user
    assert purchase.credits_units == to_units("20") and purchase.amount_cents == 2110
    sent = [p for m, path, p in fake_stripe.requests if path == "/v1/checkout/sessions" and m == "POST"][-1]
    assert sent["mode"] == "payment"
    assert sent["metadata"]["switchyard_org"] == str(org.pk)
    assert sent["payment_intent_data"]["setup_future_usage"] == "off_session"
    assert [i["price_data"]["unit_amount"] for i in sent["line_items"]] == ["2000", "110"]
    assert sent["customer"] == BillingProfile.objects.get(pk=org.pk).stripe_customer_id != ""
    assert _balance(org) == 0  # the redirect back proves nothing; only a verified webhook credits

    completed, intent_succeeded = fake_stripe.checkout_pay(session_id, payment_method="pm_card_saved")
    _deliver_and_wait(live, completed)
    assert _balance(org) == to_units("20")
    entry = LedgerEntry.objects.get(organization=org, kind=EntryKind.PURCHASE)
    assert entry.source == session_id and entry.amount_units == to_units("20")
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PAID and purchase.stripe_payment_intent_id
    # The card is saved for off-session top-ups, and the charge id is known for refunds.
    profile = wait_for(lambda: BillingProfile.objects.filter(pk=org.pk).exclude(payment_method_id="").first())
    assert profile.payment_method_id == "pm_card_saved"
    assert wait_for(lambda: Purchase.objects.get(pk=purchase.pk).stripe_charge_id.startswith("ch_"))

    # The checkout's payment_intent.succeeded is recognised as not an auto top-up: no second credit.
    _deliver_and_wait(live, intent_succeeded)
    assert StripeEvent.objects.get(pk=intent_succeeded["id"]).status == StripeEventStatus.IGNORED
    assert _balance(org) == ledger_balance_units(organization_id=org.pk) == to_units("20")
    assert "Credit purchase" in client.get(reverse("credits")).content.decode()


def test_replayed_and_concurrent_duplicate_deliveries_credit_once(live, fake_stripe):
    org = make_org(credits="1")
    session_id = _session(org, "50")
    completed, _ = fake_stripe.checkout_pay(session_id)
    results: list[int] = []

    def send() -> None:
        results.append(_deliver(live, completed).status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 8
    wait_for(lambda: _processed(completed["id"]))
    again = _deliver(live, completed)  # a replay long after
    assert again.status_code == 200 and again.json()["duplicate"] is True
    time.sleep(0.5)
    assert StripeEvent.objects.filter(pk=completed["id"]).count() == 1
    assert LedgerEntry.objects.filter(organization=org, kind=EntryKind.PURCHASE).count() == 1
    assert _balance(org) == to_units("51")

    # The same payment reported by a different event (Stripe's retries carry new ids for new events).
    twin = fake_stripe.event("checkout.session.completed", fake_stripe.sessions[session_id])
    _deliver_and_wait(live, twin)
    assert _balance(org) == to_units("51")


@pytest.mark.parametrize(
    "case",
    ["tampered_body", "wrong_secret", "stale_timestamp", "no_header", "garbage_header"],
)
def test_unverifiable_deliveries_are_rejected_and_change_nothing(live, fake_stripe, case):
    org = make_org(credits=None)
    session_id = _session(org)
    completed, _ = fake_stripe.checkout_pay(session_id)
    payload = json.dumps(completed).encode()
    now = int(time.time())
    headers = {
        "tampered_body": sign(payload.replace(b"paid", b"PAID"), WEBHOOK_SECRET),
        "wrong_secret": sign(payload, "whsec_someone_else"),
        "stale_timestamp": sign(payload, WEBHOOK_SECRET, now - 301),  # beyond the 300 s tolerance
        "no_header": None,
        "garbage_header": "t=abc,v1=zzz",
    }
    import httpx

    sent = {"Content-Type": "application/json"}
    if headers[case] is not None:
        sent["Stripe-Signature"] = headers[case]
    response = httpx.post(_hook(live), content=payload, headers=sent)
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == 400 and "ignature" in body["error"]["message"]
    assert not StripeEvent.objects.exists()
    assert _balance(org) == 0


def test_tolerance_is_configurable_and_the_endpoint_speaks_json(live, fake_stripe, settings):
    import httpx

    org = make_org(credits=None)
    completed, _ = fake_stripe.checkout_pay(_session(org))
    settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS = 3600
    assert _deliver(live, completed, timestamp=int(time.time()) - 1800).status_code == 200
    wait_for(lambda: _balance(org) == to_units("20"))
    wrong_method = httpx.get(_hook(live))
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == 405
    not_json = httpx.post(
        _hook(live), content=b"nope", headers={"Stripe-Signature": sign(b"nope", WEBHOOK_SECRET)}
    )
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == 400
    settings.STRIPE_WEBHOOK_SECRET = ""
    unconfigured = _deliver(live, completed)
    assert (
        unconfigured.status_code == 503 and "STRIPE_WEBHOOK_SECRET" in unconfigured.json()["error"]["message"]
    )


def test_delayed_payment_succeeds_out_of_order(live, fake_stripe):
    """async_payment_succeeded may arrive before the (unpaid) completed event: credit once, never undo."""
    org = make_org(credits=None)
    session_id = _session(org, "10")
    (completed_unpaid,) = fake_stripe.checkout_pay(session_id, delayed=True)
    succeeded = fake_stripe.settle_delayed(session_id, succeeded=True)
    _deliver_and_wait(live, succeeded)
    assert _balance(org) == to_units("10")
    _deliver_and_wait(live, completed_unpaid)
    purchase = Purchase.objects.get(stripe_checkout_session_id=session_id)
    assert purchase.status == PurchaseStatus.PAID
    assert _balance(org) == to_units("10")
    assert LedgerEntry.objects.filter(organization=org, kind=EntryKind.PURCHASE).count() == 1


def test_delayed_payment_fails(live, fake_stripe):
    org = make_org(credits=None)
    session_id = _session(org, "10")
    (completed_unpaid,) = fake_stripe.checkout_pay(session_id, delayed=True)
    _deliver_and_wait(live, completed_unpaid)
    assert Purchase.objects.get(stripe_checkout_session_id=session_id).status == PurchaseStatus.PENDING
    assert _balance(org) == 0
    _deliver_and_wait(live, fake_stripe.settle_delayed(session_id, succeeded=False))
    assert Purchase.objects.get(stripe_checkout_session_id=session_id).status == PurchaseStatus.FAILED
    assert _balance(org) == 0 and not LedgerEntry.objects.filter(organization=org).exists()


def test_partial_then_full_refund_with_replays_and_reordering(live, fake_stripe):
    org = make_org(credits="5")
    session_id = _session(org, "20")  # charged 21.10 (20 credits + 1.10 fee)
    completed, _ = fake_stripe.checkout_pay(session_id)
    _deliver_and_wait(live, completed)
    charge = fake_stripe.charge_for_session(session_id)
    assert charge["amount"] == 2110

    half = fake_stripe.refund(charge["id"], 1055)  # half the charge → half the credits
    _deliver_and_wait(live, half)
    assert _balance(org) == to_units("15")
    replay = _deliver(live, half)
    assert replay.json()["duplicate"] is True
    rest = fake_stripe.refund(charge["id"])  # cumulative amount_refunded = 2110
    _deliver_and_wait(live, rest)
    assert _balance(org) == to_units("5")
    # A late copy of the partial refund (new event id, smaller cumulative amount) changes nothing.
    late = json.loads(json.dumps(half))
    late["id"] = "evt_test_late_partial"
    _deliver_and_wait(live, late)
    assert _balance(org) == to_units("5") == ledger_balance_units(organization_id=org.pk)
    refunds = LedgerEntry.objects.filter(organization=org, kind=EntryKind.REFUND)
    assert sorted(e.amount_units for e in refunds) == [-to_units("10"), -to_units("10")]
    assert Refund.objects.filter(purchase__stripe_checkout_session_id=session_id).count() == 2
    purchase = Purchase.objects.get(stripe_checkout_session_id=session_id)
    assert purchase.refunded_cents == 2110 and purchase.refunded_units == to_units("20")


def test_refund_delivered_before_the_payment_waits_for_it(live, fake_stripe):
    org = make_org(credits=None)
    session_id = _session(org, "30")
    completed, _ = fake_stripe.checkout_pay(session_id)
    charge = fake_stripe.charge_for_session(session_id)
    refund = fake_stripe.refund(charge["id"], 1000)  # of 3165 cents charged
    assert _deliver(live, refund).status_code == 200
    wait_for(lambda: StripeEvent.objects.filter(pk=refund["id"], status=StripeEventStatus.DEFERRED).exists())
    assert _balance(org) == 0
    _deliver_and_wait(live, completed)
    wait_for(lambda: _processed(refund["id"]), what="the deferred refund")
    expected = to_units("30") - to_units("30") * 1000 // 3165
    assert _balance(org) == expected == ledger_balance_units(organization_id=org.pk)


def test_dispute_flags_the_organisation_and_blocks_purchases(live, fake_stripe):
    org = make_org(credits=None)
    session_id = _session(org, "10")
    completed, _ = fake_stripe.checkout_pay(session_id)
    _deliver_and_wait(live, completed)
    dispute = fake_stripe.dispute(fake_stripe.charge_for_session(session_id)["id"])
    _deliver_and_wait(live, dispute)
    _deliver(live, dispute)
    org.refresh_from_db()
    assert org.flagged
    assert Dispute.objects.filter(organization=org).count() == 1
    assert Purchase.objects.get(stripe_checkout_session_id=session_id).disputed
    with pytest.raises(Forbidden):
        _session(org, "10")


def test_purchase_bounds_and_fee_come_from_settings(fake_stripe, settings):
    org = make_org(credits=None)
    with pytest.raises(BadRequest):
        _session(org, "4.99")
    with pytest.raises(BadRequest):
        _session(org, "10000.01")
    with pytest.raises(BadRequest):
        _session(org, "10.001")  # not whole cents
    settings.SWITCHYARD_PURCHASE_MIN_USD = Decimal("1")
    settings.SWITCHYARD_PURCHASE_FEE_PERCENT = Decimal("0")
    settings.SWITCHYARD_PURCHASE_FEE_MIN_USD = Decimal("0")
    session_id = _session(org, "1")
    purchase = Purchase.objects.get(stripe_checkout_session_id=session_id)
    assert purchase.amount_cents == 100 and purchase.fee_units == 0
    assert len(fake_stripe.sessions[session_id]["_line_items"]) == 1


def test_without_stripe_purchases_are_disabled_with_a_clear_message(settings, db):
    settings.STRIPE_API_KEY = ""
    org = make_org(credits=None)
    client, _ = owner_client(org)
    assert "ask your operator for credits" in client.get(reverse("credits")).content.decode()
    from billing.stripe_client import PaymentsUnavailable

    with pytest.raises(PaymentsUnavailable):
        _session(org)


def test_bought_credits_are_spent_through_the_api(live, fake_stripe, billing_catalog):
    import openai

    from tests.conftest import flush_usage
    from tests.factories import make_key

    org = make_org(credits=None)
    _, secret = make_key(org)
    client = openai.OpenAI(base_url=live.api, api_key=secret, max_retries=0)
    with pytest.raises(openai.APIStatusError) as broke:
        client.chat.completions.create(model="billing/flat", messages=[{"role": "user", "content": "hi"}])
    assert broke.value.status_code == 402
    session_id = _session(org, "5")
    completed, _ = fake_stripe.checkout_pay(session_id)
    _deliver_and_wait(live, completed)
    reply = client.chat.completions.create(
        model="billing/flat", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    flush_usage()
    from routing.models import Generation

    cost = Generation.objects.get(pk=reply.id).cost_units
    assert cost > to_units("0.001")
    assert _balance(org) == to_units("5") - cost == ledger_balance_units(organization_id=org.pk)
    import httpx

    raw = httpx.get(f"{live.api}/credits", headers={"Authorization": f"Bearer {secret}"}).text
    credits = json.loads(raw, parse_float=Decimal)["data"]
    assert to_units(credits["total_credits"]) == to_units("5") and to_units(credits["total_usage"]) == cost
