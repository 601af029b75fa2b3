"""The free tier: `:free` variants and zero-priced endpoints cost nothing and are rate limited per
organisation (per minute, and per UTC day with a higher daily limit once the organisation has bought
enough credits); paid requests are not counted against it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing.models import EntryKind
from billing.selectors import ledger_balance_units
from billing.services import ledger_append
from routing.models import Generation
from switchyard.money import to_units
from tests.conftest import flush_usage
from tests.factories import make_key, make_org
from tests.gateway.ratelimit_env import *  # noqa: F403 - the shared fixtures
from tests.gateway.ratelimit_env import MINUTE, assert_rate_limited, body, post

pytestmark = pytest.mark.django_db(transaction=True)


def test_defaults_are_openrouters():
    from django.conf import settings

    assert settings.SWITCHYARD_FREE_REQUESTS_PER_MINUTE == 20
    assert settings.SWITCHYARD_FREE_REQUESTS_PER_DAY == 50
    assert settings.SWITCHYARD_FREE_REQUESTS_PER_DAY_PURCHASED == 1000
    assert settings.SWITCHYARD_FREE_PURCHASED_THRESHOLD_USD == Decimal("10")


def test_default_twenty_a_minute_per_organisation(live, rl_catalog):
    org = make_org(credits=None)  # free models need no credits
    (_, a), (_, b) = make_key(org), make_key(org)
    started = time.monotonic()
    statuses = [post(live.api, (a, b)[i % 2], body("rl/free")).status_code for i in range(21)]
    elapsed = time.monotonic() - started
    assert statuses.count(200) >= 20
    if elapsed < MINUTE / 20:  # one request refills every 3 s
        assert statuses == [200] * 20 + [429]
        assert_rate_limited(post(live.api, b, body("rl/free")), "free_rpm")
    flush_usage()
    assert ledger_balance_units(organization_id=org.pk) == 0  # free: nothing charged, nothing owed
    assert Generation.objects.filter(organization=org, status="success").count() == statuses.count(200)


def test_free_models_are_limited_paid_ones_are_not(live, rl_catalog, settings):
    settings.SWITCHYARD_FREE_REQUESTS_PER_MINUTE = 2
    org = make_org(credits="1")
    _, secret = make_key(org)
    started = time.monotonic()
    free = [post(live.api, secret, body("rl/free")).status_code for _ in range(3)]
    variant = post(live.api, secret, body("rl/mixed:free"))  # the `:free` variant is the free tier too
    if time.monotonic() - started < MINUTE / 2:
        assert free == [200, 200, 429]
        error = assert_rate_limited(variant, "free_rpm")
        assert "free-model requests per minute (2)" in error["message"]
    # Paid requests (even to a model that also has a free endpoint) are not counted against it.
    for model in ("rl/paid", "rl/mixed", "rl/paid"):
        r = post(live.api, secret, body(model))
        assert r.status_code == 200, r.text
        assert "x-ratelimit-limit" not in r.headers
    # Another organisation has its own free allowance.
    _, other = make_key(make_org(credits=None))
    assert post(live.api, other, body("rl/free")).status_code == 200


def test_mixed_free_variant_routes_only_to_the_free_endpoint_and_costs_nothing(live, rl_catalog):
    org = make_org(credits=None)
    _, secret = make_key(org)
    r = post(live.api, secret, body("rl/mixed:free"))
    assert r.status_code == 200, r.text
    assert r.json()["provider"] == "RL Free" and r.json()["usage"]["cost"] == 0
    assert r.headers["x-ratelimit-limit"] == "20"
    # Without the variant the paid endpoint may serve it, so it needs credits and is not free-tier.
    assert post(live.api, secret, body("rl/mixed")).status_code == 402


def test_daily_limit_then_raised_once_ten_dollars_were_bought(live, rl_catalog, settings):
    settings.SWITCHYARD_FREE_REQUESTS_PER_MINUTE = 0  # isolate the daily limit
    settings.SWITCHYARD_FREE_REQUESTS_PER_DAY = 3
    settings.SWITCHYARD_FREE_REQUESTS_PER_DAY_PURCHASED = 5
    org = make_org(credits=None)
    _, secret = make_key(org)
    statuses = [post(live.api, secret, body("rl/free")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    refused = post(live.api, secret, body("rl/free"))
    error = assert_rate_limited(refused, "free_rpd")
    assert "free-model requests per day (UTC) (3)" in error["message"]
    # The daily window ends at the next UTC midnight.
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    assert abs(int(refused.headers["x-ratelimit-reset"]) - midnight.timestamp() * 1000) < 5000
    assert int(refused.headers["retry-after"]) <= 86400
    # Grants do not count as purchases; $9.99 of purchases is not enough.
    ledger_append(
        organization_id=org.pk, kind=EntryKind.GRANT, amount_units=to_units("50"), source="rl-grant-1"
    )
    ledger_append(
        organization_id=org.pk, kind=EntryKind.PURCHASE, amount_units=to_units("9.99"), source="rl-buy-1"
    )
    from routing.ratelimit import purchased_cache

    purchased_cache.clear()  # the live server caches an organisation's purchases for a minute
    assert_rate_limited(post(live.api, secret, body("rl/free")), "free_rpd")
    ledger_append(
        organization_id=org.pk, kind=EntryKind.PURCHASE, amount_units=to_units("0.01"), source="rl-buy-2"
    )
    purchased_cache.clear()
    # $10 bought in all: the daily limit is 5, of which 3 are used.
    assert [post(live.api, secret, body("rl/free")).status_code for _ in range(2)] == [200, 200]
    assert_rate_limited(post(live.api, secret, body("rl/free")), "free_rpd")


def test_free_daily_limit_counts_the_organisation_not_the_key(live, rl_catalog, settings):
    settings.SWITCHYARD_FREE_REQUESTS_PER_MINUTE = 0
    settings.SWITCHYARD_FREE_REQUESTS_PER_DAY = 2
    org = make_org(credits=None)
    (_, a), (_, b) = make_key(org), make_key(org)
    assert post(live.api, a, body("rl/free")).status_code == 200
    r = post(live.api, b, body("rl/free"))
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == "0"
    assert_rate_limited(post(live.api, a, body("rl/free")), "free_rpd")
    assert_rate_limited(post(live.api, b, body("rl/free")), "free_rpd")


def test_free_limits_also_count_the_user_across_all_their_organisations(live, rl_catalog, settings):
    """Anyone can create organisations, so the free tier also counts per person: the key's creating
    user (or, for a key nobody in particular made, the organisation's owner) across every organisation."""
    from accounts.models import Membership, Role
    from tests.factories import UserFactory

    settings.SWITCHYARD_FREE_REQUESTS_PER_MINUTE = 0  # isolate the daily limit
    settings.SWITCHYARD_FREE_REQUESTS_PER_DAY = 2
    user = UserFactory(email="multi@example.com")
    first, second = make_org(credits=None), make_org(credits=None)
    for org in (first, second):
        Membership.objects.create(user=user, organization=org, role=Role.OWNER)
    _, a = make_key(first, created_by=user)
    _, b = make_key(second)  # made by a command: counts for the organisation's owner
    assert post(live.api, a, body("rl/free")).status_code == 200
    assert post(live.api, b, body("rl/free")).status_code == 200
    error = assert_rate_limited(post(live.api, b, body("rl/free")), "free_user_rpd")
    assert "across your organisations" in error["message"]
    assert_rate_limited(post(live.api, a, body("rl/free")), "free_user_rpd")
    # Someone else's organisation has its own allowance, and so has its owner.
    other = make_org(credits=None)
    Membership.objects.create(user=UserFactory(), organization=other, role=Role.OWNER)
    _, c = make_key(other)
    assert post(live.api, c, body("rl/free")).status_code == 200


def test_free_per_minute_limit_counts_the_user_too(live, rl_catalog, settings):
    from accounts.models import Membership, Role
    from tests.factories import UserFactory

    settings.SWITCHYARD_FREE_REQUESTS_PER_MINUTE = 2
    user = UserFactory()
    orgs = [make_org(credits=None) for _ in range(3)]
    secrets = []
    for org in orgs:
        Membership.objects.create(user=user, organization=org, role=Role.OWNER)
        secrets.append(make_key(org, created_by=user)[1])
    started = time.monotonic()
    statuses = [post(live.api, s, body("rl/free")).status_code for s in secrets]
    if time.monotonic() - started < MINUTE / 2:  # one request refills every 30 s
        assert statuses == [200, 200, 429]
