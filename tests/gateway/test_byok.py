"""BYOK end to end: an organisation's own provider key is used upstream (the fake records the
Authorization header), charged only the platform fee, falls back to the platform key or not, is never
revealed or logged, is encrypted at rest and rotatable, and changes reach the hot path within seconds."""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from io import StringIO

import httpx
import openai
import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.models import LedgerEntry
from routing import byok
from routing.byok import OrgProviderKey, byok_fee_units, byok_plan
from routing.models import Generation, Provider, ProviderKey
from routing.router import Candidate
from routing.services import provider_key_delete, provider_key_save, provider_keys_reencrypt
from switchyard.crypto import DecryptionError, decrypt
from switchyard.money import from_units, to_units
from tests.conftest import flush_usage
from tests.factories import make_key, make_org
from tests.fakes.openai_upstream import FakeOpenAIUpstream

PLATFORM_KEY = "sk-platform-byok-" + "P" * 30
# Deliberately not shaped like any known credential, so only the explicit secret scrubbing hides it.
ORG_KEY = "orgkey-Zq8vL2mN4pR6tX9wB1cD3fG5hJ7k"
ORG_KEY_2 = "orgkey-second-Yy7Tt5Rr3Ee1Ww9Qq8Uu6Ii4Oo2"
PROMPT_PP, COMPLETION_PP = 150_000, 600_000  # picodollars per token: $0.15 and $0.60 per million
HELLO = [{"role": "user", "content": "Say hello to the switchyard"}]

CATALOG = """
providers:
  - slug: byok-openai
    name: BYOK OpenAI
    api_format: openai
    base_url: "{url}/v1"
    api_key_env: SY_TEST_BYOK_PLATFORM_KEY
    timeouts: {{connect: 2, first_byte: 10, between_chunks: 10, total: 30}}
  - slug: simulated
    name: Switchyard Simulator
    api_format: simulated
    base_url: "sim://local"
models:
  - slug: test/byok-gpt
    name: "Test: BYOK GPT"
    context_length: 128000
    endpoints:
      - provider: byok-openai
        provider_model_id: gpt-4o-mini
        pricing: {{prompt: "0.15", completion: "0.60"}}
        max_completion_tokens: 16384
  - slug: test/byok-multi
    name: "Test: BYOK or simulated"
    context_length: 32768
    endpoints:
      - provider: byok-openai
        provider_model_id: gpt-4o-mini
        pricing: {{prompt: "0.15", completion: "0.60"}}
        max_completion_tokens: 4096
      - provider: simulated
        provider_model_id: sim-1
        pricing: {{prompt: "0.01", completion: "0.02"}}
        max_completion_tokens: 4096
"""


@pytest.fixture(scope="module")
def upstream():
    server = FakeOpenAIUpstream(api_key=PLATFORM_KEY).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_byok_cache():
    byok.forget_local()
    yield
    byok.forget_local()


@pytest.fixture
def byok_catalog(upstream, transactional_db, tmp_path, monkeypatch):
    from routing.catalog.loader import catalog_load
    from routing.catalog.snapshot import catalog

    monkeypatch.setenv("SY_TEST_BYOK_PLATFORM_KEY", PLATFORM_KEY)
    upstream.reset()
    upstream.api_key = PLATFORM_KEY
    path = tmp_path / "byok.yaml"
    path.write_text(CATALOG.format(url=upstream.base_url))
    catalog_load([path])
    catalog.clear()
    return Provider.objects.get(slug="byok-openai")


@pytest.fixture
def org(live, byok_catalog):
    return make_org(credits="5")


@pytest.fixture
def secret(org):
    return make_key(org)[1]


@pytest.fixture
def oai(live, secret):
    return openai.OpenAI(base_url=live.api, api_key=secret, max_retries=0)


def accept_any_key(upstream: FakeOpenAIUpstream) -> None:
    """The fake answers whatever key it gets (BYOK success paths); it still records each header."""
    upstream.api_key = None


def save_key(org, provider, key=ORG_KEY, fallback=True):
    return provider_key_save(
        organization=org, provider=provider, api_key=key, allow_platform_fallback=fallback
    )


def record(gen_id: str) -> Generation:
    deadline = time.monotonic() + 5
    while True:
        flush_usage()
        row = Generation.objects.filter(pk=gen_id).first()
        if row is not None or time.monotonic() > deadline:
            assert row is not None, f"no generation record for {gen_id}"
            return row
        time.sleep(0.02)


def list_units(prompt_tokens: int, completion_tokens: int) -> int:
    return prompt_tokens * PROMPT_PP + completion_tokens * COMPLETION_PP


def usage_entry(gen_id: str) -> LedgerEntry:
    return LedgerEntry.objects.get(kind="usage", source=gen_id)


# --- the fee ------------------------------------------------------------------------------------------


def test_fee_is_exact_integer_arithmetic_rounded_up():
    assert byok_fee_units(0) == 0
    assert byok_fee_units(2_000) == 100  # exactly 5%
    assert byok_fee_units(2_001) == 101  # 100.05 -> rounded up to a whole picodollar
    assert byok_fee_units(19) == 1  # 0.95 -> 1: never below the exact fee
    assert byok_fee_units(12_345, Decimal("2.5")) == 309  # 308.625
    assert byok_fee_units(10**15 + 1, Decimal("0")) == 0
    assert byok_fee_units(777, Decimal("100")) == 777
    # Large values stay exact (no float anywhere): 5% of 2^62 + 1.
    assert byok_fee_units(2**62 + 1) == -(-(2**62 + 1) * 5 // 100)


def test_fee_percent_comes_from_settings(settings):
    settings.SWITCHYARD_BYOK_FEE_PERCENT = Decimal("12.5")
    assert byok_fee_units(1_000) == 125


# --- routing order ------------------------------------------------------------------------------------


def _cand(snapshot, model, provider):
    m = snapshot.models[model]
    return Candidate(model=m, endpoint=next(e for e in m.endpoints if e.provider_slug == provider))


def test_byok_endpoints_go_first_and_platform_fallback_is_per_key(byok_catalog):
    from routing.catalog.snapshot import build_snapshot

    snap = build_snapshot()
    sim = _cand(snap, "test/byok-multi", "simulated")
    openai_ep = _cand(snap, "test/byok-multi", "byok-openai")
    key = OrgProviderKey(id=7, provider_slug="byok-openai", allow_platform_fallback=True, api_key=ORG_KEY)
    planned = byok_plan([sim, openai_ep], {"byok-openai": key})
    assert [(c.endpoint.provider_slug, byok.is_byok(c.endpoint)) for c in planned] == [
        ("byok-openai", True),
        ("simulated", False),
        ("byok-openai", False),
    ]
    assert (
        byok.byok_api_key(planned[0].endpoint) == ORG_KEY and byok.byok_api_key(planned[2].endpoint) is None
    )
    assert ORG_KEY not in repr(planned[0])  # a logged candidate never shows the key
    strict = OrgProviderKey(id=7, provider_slug="byok-openai", allow_platform_fallback=False, api_key=ORG_KEY)
    planned = byok_plan([sim, openai_ep], {"byok-openai": strict})
    assert [(c.endpoint.provider_slug, byok.is_byok(c.endpoint)) for c in planned] == [
        ("byok-openai", True),
        ("simulated", False),
    ]
    assert byok_plan([sim, openai_ep], {}) == [sim, openai_ep]


# --- requests -----------------------------------------------------------------------------------------


def test_byok_request_uses_org_key_and_is_charged_only_the_fee(oai, org, byok_catalog, upstream):
    accept_any_key(upstream)
    save_key(org, byok_catalog)
    balance_before = org.__class__.objects.get(pk=org.pk).balance_units
    resp = oai.chat.completions.create(model="test/byok-gpt", messages=HELLO)
    assert upstream.last_request.authorization == f"Bearer {ORG_KEY}"
    usage = resp.usage
    full = list_units(usage.prompt_tokens, usage.completion_tokens)
    fee = -(-full * 5 // 100)
    assert 0 < fee < full
    assert usage.model_extra["is_byok"] is True
    assert Decimal(str(usage.model_extra["cost"])) == from_units(fee)
    gen = record(resp.id)
    assert gen.is_byok and gen.cost_units == fee and gen.provider == "byok-openai"
    assert gen.attempts[0]["byok"] is True and gen.attempts[0]["status"] == 200
    assert usage_entry(resp.id).amount_units == -fee
    org.refresh_from_db()
    assert org.balance_units == balance_before - fee


def test_byok_stream_reports_fee_and_byok_in_the_usage_chunk(oai, org, byok_catalog, upstream):
    accept_any_key(upstream)
    save_key(org, byok_catalog)
    chunks = list(
        oai.chat.completions.create(
            model="test/byok-gpt", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    usage = chunks[-1].usage
    assert upstream.last_request.authorization == f"Bearer {ORG_KEY}"
    fee = byok_fee_units(list_units(usage.prompt_tokens, usage.completion_tokens))
    assert usage.model_extra["is_byok"] is True
    assert Decimal(str(usage.model_extra["cost"])) == from_units(fee)
    gen = record(chunks[0].id)
    assert gen.is_byok and gen.cost_units == fee and gen.streamed


def test_without_a_key_the_platform_key_and_list_price_apply(oai, org, upstream):
    resp = oai.chat.completions.create(model="test/byok-gpt", messages=HELLO)
    assert upstream.last_request.authorization == f"Bearer {PLATFORM_KEY}"
    usage = resp.usage
    assert usage.model_extra["is_byok"] is False
    gen = record(resp.id)
    assert not gen.is_byok and gen.cost_units == list_units(usage.prompt_tokens, usage.completion_tokens)


def test_byok_goes_first_even_when_the_router_prefers_another_provider(oai, org, byok_catalog, upstream):
    accept_any_key(upstream)
    save_key(org, byok_catalog)
    resp = oai.chat.completions.create(model="test/byok-multi", messages=HELLO)
    assert resp.model_extra["provider"] == "BYOK OpenAI"
    assert upstream.last_request.authorization == f"Bearer {ORG_KEY}"


@pytest.mark.parametrize("status", [401, 429, 500])
def test_failing_byok_key_falls_back_to_the_platform_key_at_list_price(
    oai, org, byok_catalog, upstream, status
):
    accept_any_key(upstream)
    upstream.push(f"fail_{status}")  # the first request (made with the org's key) fails
    save_key(org, byok_catalog, fallback=True)
    resp = oai.chat.completions.create(model="test/byok-gpt", messages=HELLO)
    auths = [r.authorization for r in upstream.requests if r.path.endswith("/chat/completions")]
    assert auths == [f"Bearer {ORG_KEY}", f"Bearer {PLATFORM_KEY}"]
    usage = resp.usage
    full = list_units(usage.prompt_tokens, usage.completion_tokens)
    assert usage.model_extra["is_byok"] is False
    assert Decimal(str(usage.model_extra["cost"])) == from_units(full)
    gen = record(resp.id)
    assert not gen.is_byok and gen.cost_units == full
    first, second = gen.attempts
    assert first["byok"] is True and first["status"] != 200 and second["status"] == 200
    assert "byok" not in second
    if status == 401:
        assert first["reason"] == "byok_auth" and "your organisation's own API key" in first["error"]
    if status == 429:
        assert first["reason"] == "byok_rate_limited"


@pytest.mark.parametrize("status", [401, 429, 500])
def test_failing_byok_key_without_fallback_never_uses_the_platform_key(
    oai, org, byok_catalog, upstream, status
):
    accept_any_key(upstream)
    upstream.set_default(f"fail_{status}")
    save_key(org, byok_catalog, fallback=False)
    with pytest.raises(openai.APIStatusError) as info:
        oai.chat.completions.create(model="test/byok-gpt", messages=HELLO)
    assert info.value.status_code == 502
    body = info.value.response.json()
    assert body["error"]["code"] == 502
    assert ORG_KEY not in info.value.response.text
    auths = [r.authorization for r in upstream.requests if r.path.endswith("/chat/completions")]
    assert auths == [f"Bearer {ORG_KEY}"]
    gen = record(info.value.response.headers["x-generation-id"])
    assert gen.cost_units == 0 and gen.status == "error"
    assert not LedgerEntry.objects.filter(kind="usage", source=gen.id).exclude(amount_units=0).exists()


def test_without_fallback_other_providers_still_serve(oai, org, byok_catalog, upstream):
    """'Never use the platform key' is about this provider; other providers fail over as usual."""
    accept_any_key(upstream)
    upstream.set_default("fail_500")
    save_key(org, byok_catalog, fallback=False)
    resp = oai.chat.completions.create(model="test/byok-multi", messages=HELLO)
    assert resp.model_extra["provider"] == "Switchyard Simulator"
    auths = [r.authorization for r in upstream.requests if r.path.endswith("/chat/completions")]
    assert auths == [f"Bearer {ORG_KEY}"]
    gen = record(resp.id)
    assert [a["provider"] for a in gen.attempts] == ["byok-openai", "simulated"] and not gen.is_byok


def test_hold_is_sized_at_the_fee_when_the_platform_key_cannot_be_used(live, byok_catalog, upstream):
    """Worst case at list price is 0.0006075 USD; the fee on it is about 0.00003 USD; the org has 0.0001."""
    accept_any_key(upstream)
    poor = make_org(credits="0.0001")
    client = openai.OpenAI(base_url=live.api, api_key=make_key(poor)[1], max_retries=0)
    ask = {"model": "test/byok-gpt", "messages": HELLO, "max_tokens": 1000}
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(**ask)
    assert info.value.status_code == 402  # list price: cannot be covered
    row = save_key(poor, byok_catalog, fallback=True)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(**ask)
    assert info.value.status_code == 402  # the platform fallback may cost list price: still reserved
    from routing.services import provider_key_set_fallback

    provider_key_set_fallback(provider_key=row, allow_platform_fallback=False)
    resp = client.chat.completions.create(**ask)
    assert upstream.last_request.authorization == f"Bearer {ORG_KEY}"
    gen = record(resp.id)
    assert gen.is_byok and 0 < gen.cost_units < to_units("0.0001")
    poor.refresh_from_db()
    assert poor.balance_units == to_units("0.0001") - gen.cost_units >= 0


# --- secrecy ------------------------------------------------------------------------------------------


def test_key_is_encrypted_at_rest_and_never_revealed_or_logged(
    live, oai, org, byok_catalog, upstream, caplog, secret
):
    caplog.set_level(logging.DEBUG)
    accept_any_key(upstream)
    row = save_key(org, byok_catalog)
    stored = ProviderKey.objects.get(pk=row.pk)
    assert ORG_KEY not in stored.encrypted_key and stored.last4 == ORG_KEY[-4:]
    assert decrypt(stored.encrypted_key) == ORG_KEY
    assert ORG_KEY not in str(stored) and ORG_KEY[-4:] in str(stored)

    ok = oai.chat.completions.create(model="test/byok-gpt", messages=HELLO)
    # The provider echoes the key in an error message: it is scrubbed before anyone sees it.
    upstream.push({"kind": "status", "status": 400, "message": f"Key {ORG_KEY} is not allowed here"})
    with pytest.raises(openai.BadRequestError) as bad:
        oai.chat.completions.create(model="test/byok-gpt", messages=HELLO)
    assert ORG_KEY not in bad.value.response.text and "[redacted]" in bad.value.response.text
    upstream.push("fail_401")  # falls back to the platform key
    oai.chat.completions.create(model="test/byok-gpt", messages=HELLO)
    flush_usage()

    seen = []
    for gen_id in (ok.id, bad.value.response.headers["x-generation-id"]):
        gen = record(gen_id)
        seen.append(str(gen.attempts) + gen.error)
        api = httpx.get(
            f"{live.api}/generation", params={"id": gen_id}, headers={"Authorization": f"Bearer {secret}"}
        )
        assert api.status_code == 200
        seen.append(api.text)
    # A key that no configured encryption key can decrypt (say, its key was removed too early) is not
    # used, and the server says so in its log, by id, without the key: proof that server-side logs are
    # captured here too.
    foreign = Fernet(Fernet.generate_key()).encrypt(ORG_KEY.encode()).decode()
    ProviderKey.objects.filter(pk=row.pk).update(encrypted_key=foreign)
    byok.org_provider_keys_changed(org.pk)  # what a service does after a write
    fallback = oai.chat.completions.create(model="test/byok-gpt", messages=HELLO)
    assert upstream.last_request.authorization == f"Bearer {PLATFORM_KEY}"
    assert not record(fallback.id).is_byok
    assert any(
        r.name == "switchyard.byok" and f"provider key {row.pk} " in r.getMessage() for r in caplog.records
    )
    seen.append(caplog.text)
    seen.extend(r.getMessage() + str(r.args) + str(r.exc_info) for r in caplog.records)
    for text in seen:
        assert ORG_KEY not in text
        assert stored.encrypted_key not in text


# --- rotation -----------------------------------------------------------------------------------------


def test_rotate_encryption_reencrypts_every_key_with_the_first_key(db, settings):
    from routing.models import Provider as P

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.SWITCHYARD_ENCRYPTION_KEYS = [old]
    provider = P.objects.create(slug="rot-openai", name="Rot", api_format="openai", base_url="http://x")
    orgs = [make_org(credits=None), make_org(credits=None)]
    rows = [save_key(o, provider, key=f"{ORG_KEY}-{i}") for i, o in enumerate(orgs)]
    before = {r.pk: r.encrypted_key for r in rows}

    settings.SWITCHYARD_ENCRYPTION_KEYS = [new, old]
    out = StringIO()
    call_command("rotate_encryption", stdout=out)
    assert out.getvalue().strip().endswith("Re-encrypted 2 provider key(s) with the first encryption key.")

    settings.SWITCHYARD_ENCRYPTION_KEYS = [new]  # the old key is gone: everything still decrypts
    for i, r in enumerate(rows):
        r.refresh_from_db()
        assert r.encrypted_key != before[r.pk]
        assert decrypt(r.encrypted_key) == f"{ORG_KEY}-{i}"
    settings.SWITCHYARD_ENCRYPTION_KEYS = [old]
    with pytest.raises(DecryptionError):
        decrypt(rows[0].encrypted_key)

    # A key nobody can decrypt any more is reported, not silently dropped, and the rest still rotate.
    settings.SWITCHYARD_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), new]
    ProviderKey.objects.filter(pk=rows[0].pk).update(
        encrypted_key=Fernet(old.encode()).encrypt(b"x").decode()
    )
    with pytest.raises(CommandError, match=f"ids {rows[0].pk}"):
        call_command("rotate_encryption", stdout=StringIO())
    assert provider_keys_reencrypt() == (1, [rows[0].pk])


# --- the hot-path cache -------------------------------------------------------------------------------


def _auth_of_next_request(client: openai.OpenAI, upstream: FakeOpenAIUpstream) -> str | None:
    client.chat.completions.create(model="test/byok-gpt", messages=HELLO)
    return upstream.last_request.authorization


def _wait_for(client, upstream, expected: str, allowed: set[str], seconds: float = 8.0) -> int:
    """Send requests until the upstream sees `expected`; every other header seen must be in `allowed`."""
    deadline = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < deadline:
        got = _auth_of_next_request(client, upstream)
        sent += 1
        if got == expected:
            return sent
        assert got in allowed, got
        time.sleep(0.2)
    raise AssertionError(f"{expected} was not used within {seconds}s")


def test_replaced_and_deleted_keys_take_effect_within_seconds_in_other_processes(
    oai, org, byok_catalog, upstream, monkeypatch
):
    """A change made elsewhere (this process is not told directly) reaches the hot path through the
    cache's short TTL (and, in full mode, the Redis version bump)."""
    accept_any_key(upstream)
    row = save_key(org, byok_catalog)
    assert _auth_of_next_request(oai, upstream) == f"Bearer {ORG_KEY}"
    monkeypatch.setattr(byok, "_forget_here", lambda org_id: None)  # as if changed by another process
    save_key(org, byok_catalog, key=ORG_KEY_2)
    _wait_for(oai, upstream, f"Bearer {ORG_KEY_2}", {f"Bearer {ORG_KEY}"})
    provider_key_delete(provider_key=ProviderKey.objects.get(pk=row.pk))
    _wait_for(oai, upstream, f"Bearer {PLATFORM_KEY}", {f"Bearer {ORG_KEY_2}"})
    # Gone for good: the hot path no longer has it anywhere.
    for _ in range(3):
        assert _auth_of_next_request(oai, upstream) == f"Bearer {PLATFORM_KEY}"


def test_hot_path_reads_the_database_at_most_once_per_ttl(oai, org, byok_catalog, upstream, monkeypatch):
    accept_any_key(upstream)
    save_key(org, byok_catalog)
    monkeypatch.setattr(byok._local, "ttl", 60.0)  # this test is about request counts, not time
    reads = []
    real = byok._rows  # the one database read behind an organisation's provider keys
    monkeypatch.setattr(byok, "_rows", lambda org_id: (reads.append(org_id), real(org_id))[1])
    for _ in range(5):
        assert _auth_of_next_request(oai, upstream) == f"Bearer {ORG_KEY}"
    assert len(reads) <= 1
