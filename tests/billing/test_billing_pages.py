"""Billing in the admin (read-only money records, searchable) and the credits page's auto top-up form."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from billing.models import BillingProfile, Dispute, Purchase, PurchaseKind, Refund, StripeEvent
from switchyard.money import to_units
from tests.billing.conftest import owner_client
from tests.factories import UserFactory, make_org


@pytest.fixture
def superuser_client(db) -> Client:
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def records(db):
    org = make_org(slug="payer", credits="1")
    purchase = Purchase.objects.create(
        organization=org,
        kind=PurchaseKind.CHECKOUT,
        status="paid",
        credits_units=to_units("20"),
        fee_units=to_units("1.10"),
        amount_cents=2110,
        stripe_checkout_session_id="cs_test_admin_search",
        stripe_payment_intent_id="pi_test_admin_search",
        stripe_charge_id="ch_test_admin_search",
        idempotency_key="k-admin",
    )
    Refund.objects.create(
        purchase=purchase,
        organization=org,
        stripe_charge_id="ch_test_admin_search",
        stripe_event_id="evt_test_refund",
        cumulative_cents=500,
        amount_units=to_units("4.739336492890"),
    )
    Dispute.objects.create(
        stripe_dispute_id="dp_test_admin", organization=org, purchase=purchase, amount_cents=2110
    )
    StripeEvent.objects.create(
        id="evt_test_admin", type="charge.refunded", payload={}, ref="pi_test_admin_search"
    )
    return purchase


@pytest.mark.parametrize(
    "model,query,expect",
    [
        ("purchase", "cs_test_admin_search", "payer"),
        ("purchase", "payer", "21.10"),
        ("refund", "ch_test_admin_search", "4.73933649289"),
        ("dispute", "dp_test_admin", "21.10"),
        ("stripeevent", "pi_test_admin_search", "evt_test_admin"),
        ("billingprofile", "payer", "payer"),
    ],
)
def test_money_records_are_searchable(superuser_client, records, model, query, expect):
    if model == "billingprofile":
        BillingProfile.objects.create(organization=records.organization, stripe_customer_id="cus_test_x")
    page = superuser_client.get(f"/admin/billing/{model}/", {"q": query})
    assert page.status_code == 200 and expect in page.content.decode()


def test_purchases_cannot_be_edited_or_added_in_the_admin(superuser_client, records):
    change = f"/admin/billing/purchase/{records.pk}/change/"
    assert superuser_client.get(change).status_code == 200
    assert superuser_client.post(change, {"status": "failed", "credits_units": 1}).status_code == 403
    assert superuser_client.post("/admin/billing/purchase/add/", {}).status_code == 403
    assert (
        superuser_client.post(f"/admin/billing/purchase/{records.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    records.refresh_from_db()
    assert records.status == "paid" and records.credits_units == to_units("20")


def test_adjustment_records_reason_and_acting_admin(db):
    from billing.models import LedgerEntry

    admin_user = UserFactory(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin_user)
    org = make_org(credits="5")
    response = client.post(
        reverse("admin:billing_ledgerentry_grant"),
        {"organization": org.pk, "amount": "-1.5", "kind": "adjustment", "reason": "double-charged request"},
    )
    assert response.status_code == 302
    entry = LedgerEntry.objects.get(organization=org, kind="adjustment")
    assert entry.amount_units == -to_units("1.5") and entry.created_by == admin_user
    assert entry.reason == "double-charged request"


def test_auto_topup_form_saves_and_shows_failures(fake_stripe, db):
    org = make_org(credits="1")
    client, _ = owner_client(org)
    page = client.get(reverse("credits")).content.decode()
    assert "Auto top-up" in page and "No card saved yet" in page
    bad = client.post(reverse("credits-auto-topup"), {"threshold": "5", "amount": "1"})
    assert bad.status_code == 400
    ok = client.post(reverse("credits-auto-topup"), {"threshold": "5", "amount": "25"})
    assert ok.status_code == 302
    profile = BillingProfile.objects.get(pk=org.pk)
    assert profile.auto_topup_enabled
    assert profile.auto_topup_threshold_units == to_units(
        "5"
    ) and profile.auto_topup_amount_units == to_units("25")
    BillingProfile.objects.filter(pk=org.pk).update(
        auto_topup_notice="Auto top-up of $26.38 failed: Your card was declined.", payment_method_id="pm_x"
    )
    page = client.get(reverse("credits")).content.decode()
    assert "Your card was declined." in page and "A card is saved" in page
    assert 'value="25"' in page
    off = client.post(reverse("credits-auto-topup"), {"threshold": "", "amount": ""})
    assert off.status_code == 302 and not BillingProfile.objects.get(pk=org.pk).auto_topup_enabled
