"""Secrets stay secret: customers' API keys, the platform's provider keys and organisations' BYOK keys
never appear in responses, logs, generation records or the admin, even when a provider echoes one back.

Logs are checked twice: the records as the code emitted them (caplog: nobody logs a secret) and the
bytes the configured handler wrote to stderr (capfd: the redaction filter is the last line of defence).
"""

from __future__ import annotations

import io
import logging
import time

import httpx
import pytest
from django.forms.models import model_to_dict
from django.test import Client

from accounts.models import AuditEvent
from routing.models import Generation, Provider, ProviderKey
from tests.conftest import flush_usage
from tests.factories import UserFactory, make_key, make_org
from tests.fakes.openai_upstream import FakeOpenAIUpstream

# Not shaped like any known credential, so only explicit scrubbing (not a pattern) can hide it.
PLATFORM_KEY = "platform-Zq8vL2mN4pR6tX9wB1cD3fG5hJ7kQ0"
SHAPED_PLATFORM_KEY = "sk-proj-" + "Ab3dE5" * 6  # shaped like OpenAI's keys
BYOK_SECRET = "orgown-Yy7Tt5Rr3Ee1Ww9Qq8Uu6Ii4Oo2Pp"
HELLO = [{"role": "user", "content": "hello"}]

CATALOG = """
providers:
  - slug: leaky
    name: Leaky Provider
    api_format: openai
    base_url: "{url}/v1"
    api_key_env: SY_TEST_LEAKY_KEY
    timeouts: {{connect: 2, first_byte: 10, between_chunks: 10, total: 20}}
models:
  - slug: test/leaky
    name: "Test: leaky"
    context_length: 8192
    endpoints:
      - provider: leaky
        provider_model_id: gpt-4o-mini
        pricing: {{prompt: "0.15", completion: "0.60"}}
        max_completion_tokens: 1024
"""


@pytest.fixture(scope="module")
def upstream():
    server = FakeOpenAIUpstream(api_key=PLATFORM_KEY).start()
    yield server
    server.stop()


@pytest.fixture
def leaky_catalog(upstream, live, tmp_path, monkeypatch):
    from routing import byok
    from routing.catalog.loader import catalog_load
    from routing.catalog.snapshot import catalog

    monkeypatch.setenv("SY_TEST_LEAKY_KEY", PLATFORM_KEY)
    upstream.reset()
    upstream.api_key = PLATFORM_KEY
    path = tmp_path / "leaky.yaml"
    path.write_text(CATALOG.format(url=upstream.base_url))
    catalog_load([path])
    catalog.clear()
    byok.forget_local()
    yield Provider.objects.get(slug="leaky")
    byok.forget_local()


@pytest.fixture
def written_logs():
    """What the configured log handler writes (after its filters and formatter), as a string buffer."""
    from switchyard.logging import RedactFilter

    handlers = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and any(isinstance(f, RedactFilter) for f in h.filters)
    ]
    assert handlers, "the console handler with the redaction filter is not installed"
    buffer = io.StringIO()
    previous = [h.setStream(buffer) for h in handlers]
    yield buffer
    for handler, stream in zip(handlers, previous, strict=True):
        handler.setStream(stream)


def _post(live, secret: str, body: dict, path: str = "/chat/completions") -> httpx.Response:
    return httpx.post(
        f"{live.api}{path}", json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    )


def _records_text(caplog) -> str:
    return caplog.text + "".join(
        r.getMessage() + str(r.args) + str(r.exc_info) + str(r.__dict__) for r in caplog.records
    )


def _generations_text() -> str:
    flush_usage()
    return "".join(str(model_to_dict(g)) for g in Generation.objects.all())


def _wait_generations(n: int) -> None:
    deadline = time.monotonic() + 10
    while Generation.objects.count() < n and time.monotonic() < deadline:
        flush_usage()
        time.sleep(0.05)


def test_customer_keys_never_logged_or_echoed(live, sim_catalog, caplog, written_logs):
    caplog.set_level(logging.DEBUG)
    org = make_org(credits="5")
    _, secret = make_key(org, name="good")
    wrong = secret[:-6] + ("A" if secret[-6] != "A" else "B") + secret[-5:]
    disabled_key, disabled = make_key(org, name="disabled")
    from accounts.services import api_key_set_disabled

    api_key_set_disabled(key=disabled_key, disabled=True)
    answers = [
        _post(live, secret, {"model": "switchyard/sim-1", "messages": HELLO}),
        _post(live, secret, {"model": "switchyard/sim-1", "messages": HELLO, "stream": True}),
        _post(live, secret, {"model": "no/such-model", "messages": HELLO}),
        _post(live, secret, {"model": "switchyard/sim-1", "messages": "not a list"}),
        _post(live, wrong, {"model": "switchyard/sim-1", "messages": HELLO}),
        _post(live, disabled, {"model": "switchyard/sim-1", "messages": HELLO}),
        httpx.post(
            f"{live.api}/messages",
            json={"model": "switchyard/sim-1", "max_tokens": 8, "messages": HELLO},
            headers={"x-api-key": wrong},
        ),
        httpx.get(f"{live.api}/key", headers={"Authorization": f"Bearer {wrong}"}),
        httpx.get(f"{live.api}/key", headers={"Authorization": f"Bearer {secret}"}),
        httpx.get(f"{live.api}/credits", headers={"Authorization": f"Bearer {disabled}"}),
        httpx.get(f"{live.api}/generation?id={secret}", headers={"Authorization": f"Bearer {secret}"}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 404, 400, 401, 401, 401, 401, 200, 401, 404]
    _wait_generations(2)
    # The last request put the key in the query string: its answer may echo it to the caller who sent
    # it, but no log line may carry it.
    logs = [_records_text(caplog), written_logs.getvalue()]
    for text in [*(a.text for a in answers[:-1]), *logs, _generations_text()]:
        for s in (secret, wrong, disabled):
            assert s not in text


def test_provider_errors_echoing_credentials_are_scrubbed(
    live, leaky_catalog, upstream, caplog, written_logs
):
    caplog.set_level(logging.DEBUG)
    org = make_org(credits="5")
    _, secret = make_key(org)
    model = {"model": "test/leaky", "messages": HELLO}
    upstream.push({"kind": "status", "status": 400, "message": f"Key {PLATFORM_KEY} may not use this model"})
    bad_request = _post(live, secret, model)
    upstream.push(
        {"kind": "status", "status": 500, "message": f"backend saw {SHAPED_PLATFORM_KEY} fail"}, times=1
    )
    server_error = _post(live, secret, model)
    upstream.push(
        {"kind": "status", "status": 401, "message": f"Incorrect API key provided: {PLATFORM_KEY}"}, times=1
    )
    rejected = _post(live, secret, model)
    upstream.push(
        {"kind": "error_in_body", "message": f"stream died, key {PLATFORM_KEY}", "after_chunks": 1}, times=1
    )
    streamed = _post(live, secret, {**model, "stream": True})
    assert bad_request.status_code == 400 and "[redacted]" in bad_request.text
    assert server_error.status_code == 502
    assert rejected.status_code == 502 and "rejected the platform's credentials" in rejected.text
    assert streamed.status_code == 200
    # The customer's key never travels upstream; the platform's does (that is what it is for).
    for request in upstream.requests:
        assert secret not in str(request.headers) and secret not in request.text
        assert request.authorization == f"Bearer {PLATFORM_KEY}"
    _wait_generations(4)
    answers = [bad_request.text, server_error.text, rejected.text, streamed.text]
    assert "backend saw [redacted] fail" in server_error.text
    for text in [*answers, _records_text(caplog), written_logs.getvalue(), _generations_text()]:
        assert PLATFORM_KEY not in text
        assert SHAPED_PLATFORM_KEY not in text
        assert secret not in text


def test_admin_never_shows_secrets(live, leaky_catalog, upstream):
    from routing.services import provider_key_save

    org = make_org(credits="5")
    key, secret = make_key(org, name="visible name")
    byok = provider_key_save(organization=org, provider=leaky_catalog, api_key=BYOK_SECRET)
    upstream.api_key = None  # the fake accepts the organisation's key
    upstream.push({"kind": "status", "status": 400, "message": f"bad key {BYOK_SECRET}"})
    answer = _post(live, secret, {"model": "test/leaky", "messages": HELLO})
    assert answer.status_code == 400 and BYOK_SECRET not in answer.text
    _wait_generations(1)
    gen = Generation.objects.get()
    ciphertext = ProviderKey.objects.get(pk=byok.pk).encrypted_key
    staff = UserFactory(email="staff@example.com", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    pages = [
        "/admin/accounts/apikey/",
        f"/admin/accounts/apikey/{key.pk}/change/",
        "/admin/routing/providerkey/",
        f"/admin/routing/providerkey/{byok.pk}/change/",
        "/admin/routing/generation/",
        f"/admin/routing/generation/{gen.pk}/change/",
        "/admin/accounts/auditevent/",
        f"/admin/accounts/auditevent/{AuditEvent.objects.filter(action='provider_key.saved').get().pk}/change/",
    ]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        body = response.content.decode()
        for s in (secret, BYOK_SECRET, ciphertext, PLATFORM_KEY):
            assert s not in body, (page, s[:10])
    assert "visible name" in client.get(pages[0]).content.decode()  # the pages did render the rows


def test_redact_filter_scrubs_what_a_careless_caller_logs(written_logs):
    """The handler's filter catches credentials even when code logs one (which it must not)."""
    from switchyard.logging import redact

    key = "sk-sy-v1-" + "k" * 43
    logging.getLogger("switchyard.test").warning("careless %s and Bearer %s", key, "tok" * 10)
    try:
        raise ValueError(f"exploded with {key}")
    except ValueError:
        logging.getLogger("switchyard.test").exception("boom")
    err = written_logs.getvalue()
    assert "careless [redacted] and [redacted]" in err and "exploded with [redacted]" in err
    assert key not in err and "tok" * 10 not in err
    assert redact("prefix sk-sy-v1-abc123 stays") == "prefix sk-sy-v1-abc123 stays"
