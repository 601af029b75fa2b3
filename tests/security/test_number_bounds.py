"""Every number a user can type is bounded: absurd magnitudes get a 400 or a form error, never a 500
(`decimal.Overflow` from arithmetic on `1e999999999`, or an integer too big for the database)."""

from __future__ import annotations

import httpx
import pytest
from django.test import Client

HUGE = ["1e999999999", "-1e999999999", "9" * 400, "1e-999999999", "NaN", "Infinity", "1e308", "0x10"]


@pytest.mark.django_db
@pytest.mark.parametrize("amount", HUGE)
def test_fee_quote_is_a_form_answer_not_a_500(team, amount):
    response = team.client("owner").get("/dashboard/credits/fee", {"amount": amount})
    assert response.status_code in (200, 400), (amount, response.status_code)


@pytest.mark.django_db
@pytest.mark.parametrize("amount", HUGE)
def test_key_limit_auto_topup_and_buy_forms_reject_huge_numbers(team, amount, settings):
    client = team.client("owner")
    created = client.post("/dashboard/keys/new", {"name": "x", "limit": amount, "limit_reset": "none"})
    assert created.status_code in (200, 400), created.status_code
    edit = client.post(
        f"/dashboard/keys/{team.owner_key.pk}/edit", {"name": "x", "limit": amount, "limit_reset": "none"}
    )
    assert edit.status_code in (302, 400), edit.status_code
    settings.STRIPE_API_KEY = "sk_test_unused"
    topup = client.post("/dashboard/credits/auto-topup", {"threshold": amount, "amount": amount})
    assert topup.status_code in (302, 400), topup.status_code
    buy = client.post("/dashboard/credits/buy", {"amount": amount})
    assert buy.status_code in (302, 400), buy.status_code


@pytest.mark.django_db
@pytest.mark.parametrize("value", HUGE)
def test_model_browser_price_filter(value, default_catalog):
    response = Client().get("/models", {"max_price": value})
    assert response.status_code in (200, 400), response.status_code


@pytest.mark.parametrize("value", ["1e999999999", "9" * 400, 1e308])
def test_provider_max_price_on_the_api_is_never_a_500(live, sim_catalog, value):
    from accounts.models import Membership  # noqa: F401 - the DB is ready through `live`
    from tests.factories import make_key, make_org

    _, secret = make_key(make_org(credits="1"))
    for max_price in ({"prompt": value, "completion": value}, {"prompt": value}):
        r = httpx.post(
            f"{live.api}/chat/completions",
            json={
                "model": "switchyard/sim-1",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
                "provider": {"max_price": max_price},
            },
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        )
        assert r.status_code in (200, 400), r.text


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["9" * 30, "-" + "9" * 30, "1e5", " 3 "])
def test_organisation_switch_with_a_huge_id_is_a_404(team, value):
    response = team.client("owner").post("/dashboard/organizations/switch", {"organization": value})
    assert response.status_code == 404, response.status_code


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/dashboard/keys/{n}/edit"),
        ("post", "/dashboard/keys/{n}/delete"),
        ("post", "/dashboard/members/{n}/remove"),
        ("post", "/dashboard/members/{n}/role"),
        ("post", "/dashboard/invitations/{n}/revoke"),
        ("post", "/dashboard/settings/provider-keys/{n}/delete"),
        ("get", "/dashboard/activity/?page={n}&key={n}"),
    ],
)
def test_ids_in_urls_too_big_for_the_database_are_a_404(team, method, path):
    response = getattr(team.client("owner"), method)(path.format(n="9" * 30))
    assert response.status_code in (200, 404), (path, response.status_code)
