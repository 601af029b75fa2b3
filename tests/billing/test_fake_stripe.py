"""The fake Stripe itself: it decodes what the `stripe` library sends, signs as Stripe signs, errors as Stripe errs."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
import stripe
from stripe._encode import _api_encode

from tests.fakes.stripe_upstream import FakeStripe, parse_form, sign


def test_form_decoding_matches_the_library_encoding():
    params = {
        "mode": "payment",
        "line_items": [
            {
                "quantity": 1,
                "price_data": {"currency": "usd", "unit_amount": 2000, "product_data": {"name": "a b"}},
            },
            {"quantity": 2, "price_data": {"currency": "usd", "unit_amount": 5}},
        ],
        "metadata": {"org": "7"},
        "off_session": True,
    }
    decoded = parse_form(urlencode(list(_api_encode(params))))
    assert decoded == {
        "mode": "payment",
        "line_items": [
            {
                "quantity": "1",
                "price_data": {"currency": "usd", "unit_amount": "2000", "product_data": {"name": "a b"}},
            },
            {"quantity": "2", "price_data": {"currency": "usd", "unit_amount": "5"}},
        ],
        "metadata": {"org": "7"},
        "off_session": "true",
    }


def test_signatures_verify_with_the_stripe_library_and_tampering_fails():
    payload = b'{"id": "evt_1", "object": "event", "type": "x", "data": {"object": {}}}'
    header = sign(payload, "whsec_abc")
    event = stripe.Webhook.construct_event(payload, header, "whsec_abc")
    assert event.id == "evt_1"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload + b" ", header, "whsec_abc")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, sign(payload, "whsec_abc", timestamp=1), "whsec_abc")


def test_errors_idempotency_and_auth_look_like_stripe():
    with FakeStripe(api_key="sk_test_fake") as fake:
        client = stripe.StripeClient(
            "sk_test_fake", base_addresses={"api": fake.base_url}, max_network_retries=0
        )
        first = client.v1.customers.create(params={"name": "a"}, options={"idempotency_key": "same"})
        again = client.v1.customers.create(params={"name": "a"}, options={"idempotency_key": "same"})
        assert first.id == again.id and len(fake.customers) == 1
        with pytest.raises(stripe.IdempotencyError):
            client.v1.customers.create(params={"name": "b"}, options={"idempotency_key": "same"})
        with pytest.raises(stripe.InvalidRequestError) as missing:
            client.v1.checkout.sessions.retrieve("cs_nope")
        assert missing.value.code == "resource_missing" and missing.value.http_status == 404
        fake.card_outcomes["pm_declined"] = "card_declined"
        with pytest.raises(stripe.CardError) as declined:
            client.v1.payment_intents.create(
                params={"amount": 500, "currency": "usd", "payment_method": "pm_declined", "confirm": True}
            )
        assert declined.value.code == "card_declined" and declined.value.http_status == 402
        wrong = stripe.StripeClient(
            "sk_test_wrong", base_addresses={"api": fake.base_url}, max_network_retries=0
        )
        with pytest.raises(stripe.AuthenticationError):
            wrong.v1.customers.create(params={"name": "x"})
