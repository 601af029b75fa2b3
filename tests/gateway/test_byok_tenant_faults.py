"""A tenant's own faults never count against a provider's shared health (the circuit breaker everyone's
routing reads): a BYOK key that cannot be sent in a header, a 401/403/404 through the organisation's
own key, a 400 the provider blames on the request. Before, a key with non-Latin-1 characters passed
validation, failed at header encoding as a provider `connect` failure, and six requests opened the
cheap endpoint's circuit, moving every other organisation onto a 50x pricier endpoint.

Keys are also refused on save unless they are printable ASCII (what an HTTP header can carry)."""

from __future__ import annotations

import httpx
import pytest

from routing import byok
from routing.health import book
from routing.models import Endpoint, Provider, ProviderKey
from routing.services import provider_key_save
from switchyard.crypto import encrypt
from switchyard.errors import BadRequest
from tests.factories import make_key, make_org
from tests.fakes.openai_upstream import FakeOpenAIUpstream

CHEAP_KEY = "sk-cheap-platform-" + "C" * 30
PRICEY_KEY = "sk-pricey-platform-" + "P" * 30
HELLO = [{"role": "user", "content": "Say hello"}]
SHARED = {"sort": "price"}  # the cheap endpoint first, deterministically

CATALOG = """
providers:
  - slug: cheap
    name: Cheap
    api_format: openai
    base_url: "{cheap}/v1"
    api_key_env: SY_TEST_CHEAP_KEY
    timeouts: {{connect: 2, first_byte: 10, between_chunks: 10, total: 30}}
  - slug: pricey
    name: Pricey
    api_format: openai
    base_url: "{pricey}/v1"
    api_key_env: SY_TEST_PRICEY_KEY
    timeouts: {{connect: 2, first_byte: 10, between_chunks: 10, total: 30}}
models:
  - slug: test/shared
    name: "Test: shared"
    context_length: 128000
    endpoints:
      - provider: cheap
        provider_model_id: gpt-4o-mini
        pricing: {{prompt: "0.10", completion: "0.40"}}
        max_completion_tokens: 4096
      - provider: pricey
        provider_model_id: gpt-4o-mini
        pricing: {{prompt: "5", completion: "20"}}
        max_completion_tokens: 4096
"""


@pytest.fixture(scope="module")
def upstreams():
    cheap = FakeOpenAIUpstream(api_key=CHEAP_KEY).start()
    pricey = FakeOpenAIUpstream(api_key=PRICEY_KEY).start()
    yield cheap, pricey
    cheap.stop()
    pricey.stop()


@pytest.fixture
def shared_catalog(upstreams, transactional_db, tmp_path, monkeypatch, settings):
    from routing.catalog.loader import catalog_load
    from routing.catalog.snapshot import catalog

    cheap, pricey = upstreams
    monkeypatch.setenv("SY_TEST_CHEAP_KEY", CHEAP_KEY)
    monkeypatch.setenv("SY_TEST_PRICEY_KEY", PRICEY_KEY)
    settings.SWITCHYARD_BREAKER_THRESHOLD = 5
    settings.SWITCHYARD_BREAKER_COOLDOWN_SECONDS = 600
    for server in (cheap, pricey):
        server.reset()
    cheap.api_key = CHEAP_KEY
    path = tmp_path / "shared.yaml"
    path.write_text(CATALOG.format(cheap=cheap.base_url, pricey=pricey.base_url))
    catalog_load([path])
    catalog.clear()
    book.reset()
    byok.forget_local()
    yield Provider.objects.get(slug="cheap")
    byok.forget_local()


def _post(live, secret: str, **extra) -> httpx.Response:
    return httpx.post(
        f"{live.api}/chat/completions",
        json={"model": "test/shared", "messages": HELLO, "provider": SHARED, **extra},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )


def _cheap_endpoint_id() -> int:
    return Endpoint.objects.get(provider__slug="cheap").pk


def _bad_byok_key(org, provider: Provider, key: str) -> None:
    """A key stored before keys were checked on save (written straight to the table)."""
    ProviderKey.objects.create(
        organization=org,
        provider=provider,
        encrypted_key=encrypt(key),
        last4=key[-4:],
        allow_platform_fallback=False,
    )


@pytest.mark.parametrize(
    "scenario",
    ["key_not_latin1", "key_latin1_not_ascii", "byok_401", "byok_403", "byok_404", "request_400"],
)
def test_a_tenants_own_faults_never_open_the_shared_circuit(live, shared_catalog, upstreams, scenario):
    cheap, _pricey = upstreams
    bad_org, good_org = make_org(credits="5"), make_org(credits="5")
    bad_secret, good_secret = make_key(bad_org)[1], make_key(good_org)[1]
    if scenario == "key_not_latin1":
        _bad_byok_key(bad_org, shared_catalog, "sk-ключ-" + "k" * 30)
    elif scenario == "key_latin1_not_ascii":
        _bad_byok_key(bad_org, shared_catalog, "sk-clé-" + "k" * 30)
    elif scenario.startswith("byok_"):
        provider_key_save(
            organization=bad_org,
            provider=shared_catalog,
            api_key="sk-tenant-own-" + "T" * 30,
            allow_platform_fallback=False,
        )
        cheap.api_key = None  # the fake answers whatever key it is sent; its behaviour is scripted
        cheap.push(f"fail_{scenario[-3:]}", times=6)
    else:
        cheap.push("fail_400", times=6)

    for _ in range(6):
        resp = _post(live, bad_secret)
        assert resp.status_code < 500 or resp.status_code == 502, resp.text
        if resp.status_code == 200:  # failed over to the pricier endpoint (another provider)
            assert resp.json()["provider"] == "Pricey"
        else:  # a request the provider refused as bad: its own 400, never a 500
            assert scenario == "request_400" and resp.status_code == 400, resp.text
        assert "Traceback" not in resp.text

    ep = _cheap_endpoint_id()
    assert book.state(ep) == "closed"
    assert not book.degraded(ep)
    cheap.api_key = CHEAP_KEY
    for _ in range(3):
        resp = _post(live, good_secret)
        assert resp.status_code == 200, resp.text
        assert resp.json()["provider"] == "Cheap"


def test_a_key_that_cannot_be_sent_is_reported_as_the_organisations_key(live, shared_catalog, upstreams):
    """The attempt names the organisation's key and says what to do; the provider is never contacted."""
    cheap, _pricey = upstreams
    org = make_org(credits="5")
    secret = make_key(org)[1]
    _bad_byok_key(org, shared_catalog, "sk-ключ-" + "k" * 30)
    before = len(cheap.requests)
    resp = _post(live, secret, models=None)
    assert resp.status_code == 200 and resp.json()["provider"] == "Pricey", resp.text
    assert len(cheap.requests) == before
    gen = httpx.get(
        f"{live.api}/generation",
        params={"id": resp.json()["id"]},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )
    first = gen.json()["data"]["attempts"][0]
    assert first["provider"] == "cheap" and first["reason"] == "byok_bad_key", first
    assert "organisation's own API key" in first["error"] and "ключ" not in first["error"]


@pytest.mark.parametrize(
    "key",
    [
        "sk-ключ-0123456789abcdef",  # Cyrillic: not Latin-1, the header encoding failed
        "sk-clé-0123456789abcdef",  # Latin-1 but not ASCII: what a provider's key never holds
        "sk-key-0123456789abcdef\u2011x",  # a non-breaking hyphen pasted from a document
        "sk-key-0123456789abcdef\U0001f511",
        "sk-key-\u00a0-0123456789abcdef",  # NBSP
        "sk-key-0123456789\u200babcdef",  # zero-width space
    ],
)
def test_service_refuses_a_key_that_is_not_printable_ascii(db, key):
    provider = Provider.objects.create(
        slug="zen", name="Zen", api_format="openai", base_url="https://zen.example/v1"
    )
    org = make_org(credits=None)
    with pytest.raises(BadRequest) as info:
        provider_key_save(organization=org, provider=provider, api_key=key)
    assert info.value.metadata == {"field": "api_key"}
    assert "ASCII" in info.value.message or "spaces" in info.value.message
    assert not ProviderKey.objects.filter(organization=org).exists()
