"""Rate limits per key and per organisation (requests and tokens per minute) through the live server:
429 in the error shape with Retry-After and X-RateLimit-* headers, nothing held or charged for a
refused request, the limits shared by concurrent clients, configurable in settings and in admin."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from django.test import Client

from accounts.keys import key_cache_invalidate
from accounts.models import ApiKey, Organization
from billing.selectors import ledger_balance_units
from routing.models import Generation
from tests.conftest import flush_usage
from tests.factories import make_key, make_org
from tests.gateway.ratelimit_env import *  # noqa: F403 - the shared fixtures
from tests.gateway.ratelimit_env import MINUTE, allowed_within, assert_rate_limited, body, burst, post

pytestmark = pytest.mark.django_db(transaction=True)


def _limit_key(key: ApiKey, **fields: int | None) -> None:
    ApiKey.objects.filter(pk=key.pk).update(**fields)
    key_cache_invalidate(key.key_hash)


def _limit_org(org: Organization, **fields: int | None) -> None:
    Organization.objects.filter(pk=org.pk).update(**fields)
    for digest in ApiKey.objects.filter(organization=org).values_list("key_hash", flat=True):
        key_cache_invalidate(digest)


def test_key_requests_per_minute_then_429_with_headers(live, rl_catalog):
    org = make_org(credits="1")
    key, secret = make_key(org)
    other_key, other_secret = make_key(org)
    _limit_key(key, rate_limit_rpm=3)
    started = time.monotonic()
    remaining = []
    for _ in range(3):
        r = post(live.api, secret, body())
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-limit"] == "3"
        remaining.append(int(r.headers["x-ratelimit-remaining"]))
        assert int(r.headers["x-ratelimit-reset"]) > time.time() * 1000
    refused = post(live.api, secret, body())
    if time.monotonic() - started < MINUTE / 3:  # nothing has refilled yet (one request per 20 s)
        assert remaining == [2, 1, 0]
        error = assert_rate_limited(refused, "key_rpm")
        assert "this API key's requests per minute (3)" in error["message"]
        assert 1 <= int(refused.headers["retry-after"]) <= 20
    # Per key: the organisation's other key is not limited.
    for _ in range(5):
        assert post(live.api, other_secret, body()).status_code == 200
    flush_usage()
    # A refused request holds nothing and records nothing.
    assert Generation.objects.filter(api_key=key).count() == 3
    assert Generation.objects.filter(api_key=other_key).count() == 5


def test_refused_request_costs_nothing_and_places_no_hold(live, rl_catalog):
    org = make_org(credits="1")
    key, secret = make_key(org)
    _limit_key(key, rate_limit_rpm=1)
    assert post(live.api, secret, body()).status_code == 200
    flush_usage()
    balance = ledger_balance_units(organization_id=org.pk)
    for _ in range(5):
        assert_rate_limited(post(live.api, secret, body()), "key_rpm")
    flush_usage()
    assert ledger_balance_units(organization_id=org.pk) == balance
    assert Generation.objects.filter(organization=org).count() == 1
    from billing.models import Hold, HoldStatus

    assert not Hold.objects.filter(organization=org, status=HoldStatus.OPEN).exists()


def test_organisation_requests_per_minute_shared_by_its_keys(live, rl_catalog):
    org = make_org(credits="1")
    (_, a), (_, b) = make_key(org), make_key(org)
    outsider = make_org(credits="1")
    _, c = make_key(outsider)
    _limit_org(org, rate_limit_rpm=4)
    started = time.monotonic()
    statuses = [post(live.api, s, body()).status_code for s in (a, b, a, b, a, b)]
    elapsed = time.monotonic() - started
    ok = statuses.count(200)
    assert 4 <= ok <= allowed_within(4, MINUTE, elapsed)
    if elapsed < MINUTE / 4:
        assert statuses == [200, 200, 200, 200, 429, 429]
        assert_rate_limited(post(live.api, b, body()), "org_rpm")
    # Another organisation is unaffected.
    assert all(post(live.api, c, body()).status_code == 200 for _ in range(6))


def test_settings_default_applies_and_an_override_of_zero_lifts_it(live, rl_catalog, settings):
    settings.SWITCHYARD_RATE_LIMIT_KEY_RPM = 2
    org = make_org(credits="1")
    _, limited = make_key(org)
    unlimited_key, unlimited = make_key(org)
    raised_key, raised = make_key(org)
    _limit_key(unlimited_key, rate_limit_rpm=0)
    _limit_key(raised_key, rate_limit_rpm=5)
    started = time.monotonic()
    statuses = [post(live.api, limited, body()).status_code for _ in range(3)]
    raised_statuses = [post(live.api, raised, body()).status_code for _ in range(6)]
    if time.monotonic() - started < MINUTE / 5:
        assert statuses == [200, 200, 429]
        assert raised_statuses == [200] * 5 + [429]
    for _ in range(8):
        r = post(live.api, unlimited, body())
        assert r.status_code == 200
        assert "x-ratelimit-limit" not in r.headers  # no limit applies: no headers


def test_concurrent_clients_cannot_exceed_the_limit_together(live, rl_catalog):
    org = make_org(credits="5")
    key, secret = make_key(org)
    _limit_key(key, rate_limit_rpm=5)
    started = time.monotonic()
    statuses = burst(live.api, [secret] * 30, body())
    elapsed = time.monotonic() - started
    assert 5 <= statuses.count(200) <= allowed_within(5, MINUTE, elapsed)
    assert statuses.count(200) + statuses.count(429) == 30


def test_tokens_per_minute_counts_actual_tokens_after_the_answer(live, rl_catalog):
    org = make_org(credits="1")
    key, secret = make_key(org)
    # One answer uses far more than 10 tokens (prompt + completion): the bucket goes into debt.
    _limit_key(key, rate_limit_tpm=10)
    first = post(live.api, secret, body(max_tokens=64))
    assert first.status_code == 200
    assert first.json()["usage"]["total_tokens"] > 10
    # The tokens are taken just after the answer (off the response path): wait until they are.
    deadline = time.monotonic() + 10
    while True:
        r = post(live.api, secret, body())
        if r.status_code == 429 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    error = assert_rate_limited(r, "key_tpm")
    assert "tokens per minute (10)" in error["message"]


def test_organisation_tokens_per_minute(live, rl_catalog):
    org = make_org(credits="1")
    (_, a), (_, b) = make_key(org), make_key(org)
    _limit_org(org, rate_limit_tpm=10)
    assert post(live.api, a, body(max_tokens=64)).status_code == 200
    deadline = time.monotonic() + 10
    while True:
        r = post(live.api, b, body())
        if r.status_code == 429 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert_rate_limited(r, "org_tpm")


def test_openai_sdk_sees_a_rate_limit_error_and_streams_carry_headers(live, rl_catalog):
    org = make_org(credits="1")
    key, secret = make_key(org)
    _limit_key(key, rate_limit_rpm=2)
    client = openai.OpenAI(base_url=live.api, api_key=secret, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="rl/paid", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert raw.headers["x-ratelimit-limit"] == "2"
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    client.chat.completions.create(model="rl/paid", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="rl/paid", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 429
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_anthropic_messages_front_answers_429_in_its_own_shape(live, rl_catalog):
    org = make_org(credits="1")
    key, secret = make_key(org)
    _limit_key(key, rate_limit_rpm=1)
    payload = {"model": "rl/paid", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    assert post(live.api, secret, payload, "/messages").status_code == 200
    r = post(live.api, secret, payload, "/messages")
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert int(r.headers["retry-after"]) >= 1 and r.headers["x-ratelimit-remaining"] == "0"


def test_limits_are_editable_in_admin_and_apply_at_once(live, rl_catalog):
    from accounts.models import User

    admin = User.objects.create_superuser("rl-admin@example.com", "pw-rl-admin")
    org = make_org(credits="1")
    key, secret = make_key(org)
    assert post(live.api, secret, body()).status_code == 200  # the key is now cached without limits
    browser = Client()
    browser.force_login(admin)
    page = browser.get(f"/admin/accounts/organization/{org.pk}/change/")
    assert b"rate_limit_rpm" in page.content and b"rate_limit_tpm" in page.content
    form = {
        "slug": org.slug,
        "name": org.name,
        "routing_defaults": "{}",
        "created_at_0": org.created_at.strftime("%Y-%m-%d"),
        "created_at_1": org.created_at.strftime("%H:%M:%S"),
        "rate_limit_rpm": "1",
        "rate_limit_tpm": "",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }
    response = browser.post(f"/admin/accounts/organization/{org.pk}/change/", form)
    assert response.status_code == 302, (
        response.context["adminform"].form.errors,
        [f.formset.errors for f in response.context["inline_admin_formsets"]],
    )
    org.refresh_from_db()
    assert org.rate_limit_rpm == 1 and org.rate_limit_tpm is None
    # Saving in admin dropped the cached key records, so the new limit applies to the next request.
    assert post(live.api, secret, body()).status_code == 200
    assert_rate_limited(post(live.api, secret, body()), "org_rpm")
    key_page = browser.get(f"/admin/accounts/apikey/{key.pk}/change/")
    assert b"rate_limit_rpm" in key_page.content


def test_embeddings_share_the_keys_request_limit_and_input_limits(live, rl_catalog, settings):
    org = make_org(credits="1")
    key, secret = make_key(org)
    _limit_key(key, rate_limit_rpm=2)
    embed = {"model": "rl/embed", "input": ["one", "two"]}
    first = post(live.api, secret, embed, "/embeddings")
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-limit"] == "2" and first.headers["x-ratelimit-remaining"] == "1"
    assert post(live.api, secret, body()).status_code == 200  # a chat request takes the second
    assert_rate_limited(post(live.api, secret, embed, "/embeddings"), "key_rpm")
    settings.SWITCHYARD_MAX_STRING_CHARS = 10
    _, other = make_key(org)
    r = post(live.api, other, {"model": "rl/embed", "input": ["short", "x" * 11]}, "/embeddings")
    assert r.status_code == 400 and r.json()["error"]["metadata"]["field"] == "input[1]"


def test_key_endpoint_reports_the_limits(live, rl_catalog, settings):
    settings.SWITCHYARD_RATE_LIMIT_ORG_TPM = 90000
    org = make_org(credits="1")
    key, secret = make_key(org)
    _limit_key(key, rate_limit_rpm=7)
    r = httpx.get(f"{live.api}/key", headers={"Authorization": f"Bearer {secret}"})
    limits = r.json()["data"]["rate_limit"]
    assert limits == {
        "requests": 7,
        "tokens": None,
        "interval": "60s",
        "organization_requests": None,
        "organization_tokens": 90000,
        "free_requests_per_minute": 20,
        "free_requests_per_day": 50,
    }


def test_a_request_refused_for_credit_still_counts(live, rl_catalog):
    org = make_org(credits=None)
    key, secret = make_key(org)
    _limit_key(key, rate_limit_rpm=2)
    started = time.monotonic()
    statuses = [post(live.api, secret, body()).status_code for _ in range(3)]
    if time.monotonic() - started < MINUTE / 2:
        assert statuses == [402, 402, 429]
