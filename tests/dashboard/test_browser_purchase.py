"""Buying credits in a real browser: the dashboard's Buy form → the fake Stripe's hosted checkout page →
a signed `checkout.session.completed` webhook → the balance rises.

Debian's chromium (via Playwright) drives the real uvicorn server; the fake Stripe (tests/fakes/
stripe_upstream.py) serves the checkout page and delivers its events to the app's webhook endpoint over
real HTTP. In full mode the real Celery worker applies the webhook, so the test reloads until it lands.
Screenshots at desktop and phone width go to artifacts/screenshots/.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.billing.conftest import STRIPE_KEY, STRIPE_PORT, WEBHOOK_SECRET
from tests.dashboard.test_browser import Shooter, browser, browser_marks, orm  # noqa: F401  (browser: a fixture)
from tests.fakes.stripe_upstream import FakeStripe

pytestmark = browser_marks(180)


@pytest.fixture
def stripe_fake(settings, live) -> Iterator[FakeStripe]:
    """A fake Stripe with the app's webhook endpoint registered, and Switchyard pointed at it.

    It takes the port the full-mode worker was told about (tests/billing/conftest.py) unless the billing
    tests' own fake already holds it in this session.
    """
    fake = FakeStripe(api_key=STRIPE_KEY, port=STRIPE_PORT)
    try:
        fake.start()
    except OSError:
        fake = FakeStripe(api_key=STRIPE_KEY).start()
    fake.webhook_url = f"{live.url}/api/v1/stripe/webhook"
    fake.webhook_secret = WEBHOOK_SECRET
    settings.STRIPE_API_KEY = STRIPE_KEY
    settings.STRIPE_API_BASE = fake.base_url
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    try:
        yield fake
    finally:
        fake.stop()


def _owner_session_cookie(org_name: str) -> tuple[int, str, str]:
    """An organisation with an owner (email verified) and a logged-in session for them."""
    from allauth.account.models import EmailAddress
    from django.conf import settings
    from django.test import Client

    from accounts.models import Membership, Role
    from tests.factories import UserFactory, make_org

    org = make_org(slug="buyers", credits="5")
    org.name = org_name
    org.save(update_fields=["name"])
    user = UserFactory(email="buyer@browser.test")
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    Membership.objects.create(user=user, organization=org, role=Role.OWNER)
    client = Client()
    client.force_login(user)
    return org.pk, settings.SESSION_COOKIE_NAME, client.cookies[settings.SESSION_COOKIE_NAME].value


def _balance(org_id: int) -> Decimal:
    from accounts.models import Organization
    from billing.selectors import balance_get

    return balance_get(organization=Organization.objects.get(pk=org_id))


def test_buy_credits_through_the_hosted_checkout(live, stripe_fake, browser):  # noqa: F811
    from billing.models import Purchase, PurchaseStatus
    from billing.selectors import purchase_fee_usd

    base = live.url
    shoot = Shooter()
    org_id, cookie_name, cookie = orm(_owner_session_cookie, "Checkout Labs")
    before = orm(_balance, org_id)
    assert before == Decimal("5")
    fee = purchase_fee_usd(amount_usd=Decimal("10"))
    total = Decimal("10") + fee
    assert fee > 0  # the card fee is real money the owner must see before paying

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_cookies([{"name": cookie_name, "value": cookie, "url": base}])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # The credits page with purchasing on: the fee is quoted live (htmx) before anything is charged.
    page.goto(base + "/dashboard/credits/")
    assert "Purchases are not configured" not in page.content()
    page.get_by_label("Amount (USD)").fill("10")
    fee_box = page.locator("#fee-box")
    fee_box.get_by_text(f"${total:.2f}").wait_for(timeout=10000)
    assert re.search(rf"Card fee\s*\${fee:.2f}", fee_box.inner_text())
    assert re.search(r"Credits\s*\$10\.00", fee_box.inner_text())
    shoot(page, "credits-buy")

    # Continue to the (fake) hosted checkout page on the Stripe origin.
    page.get_by_role("button", name="Continue to checkout").click()
    page.wait_for_url(f"{stripe_fake.base_url}/pay/**")
    assert page.get_by_test_id("checkout-total").inner_text() == f"${total:.2f}"
    assert "Card processing fee" in page.content()
    shoot(page, "stripe-checkout")
    purchase = orm(lambda: Purchase.objects.get(organization_id=org_id))
    assert purchase.status == PurchaseStatus.PENDING and orm(_balance, org_id) == before

    # Pay: the fake marks the session paid, delivers the signed webhooks and sends us back.
    page.get_by_role("button", name=re.compile(r"^Pay ")).click()
    page.wait_for_url(f"{base}/dashboard/credits/?checkout=success")
    assert "Thank you!" in page.content()
    assert ("checkout.session.completed", 200) in stripe_fake.deliveries
    assert all(status == 200 for _, status in stripe_fake.deliveries), stripe_fake.deliveries

    # The worker (full mode) applies the webhook asynchronously: reload until the balance shows it.
    expected = "$15.00"
    deadline = time.monotonic() + 30
    while page.get_by_test_id("balance").inner_text().strip() != expected:
        assert time.monotonic() < deadline, f"balance still {page.get_by_test_id('balance').inner_text()}"
        time.sleep(0.3)
        page.goto(base + "/dashboard/credits/")
    assert orm(_balance, org_id) == before + 10  # exactly the credits bought; the fee is not credit
    history = page.locator("main table tbody tr")
    purchase_rows = history.filter(has=page.locator(".badge", has_text="Purchase"))
    assert purchase_rows.count() == 1
    assert "+$10.00" in purchase_rows.first.inner_text()
    purchase = orm(lambda: Purchase.objects.get(organization_id=org_id))
    assert purchase.status == PurchaseStatus.PAID
    shoot(page, "credits-after-purchase")

    # Paying the same session twice is impossible: the page is gone and no credit is added.
    page.goto(f"{stripe_fake.base_url}/pay/{purchase.stripe_checkout_session_id}")
    assert "no longer open" in page.content() or "is complete" in page.content()
    assert orm(_balance, org_id) == before + 10

    assert not errors, errors
    assert len(shoot.taken) == 6
    context.close()
