"""Endpoints whose platform key (`api_key_env`) is not set: `/models` and the model browser say so, an
admin can hide them, and a request that only they could serve fails fast with a 503 naming the variable,
without any upstream call; the organisation's own key (BYOK) makes them usable again."""

from __future__ import annotations

import httpx
import pytest
from django.test import override_settings

from routing import byok
from routing.models import Provider
from routing.services import provider_key_save
from tests.factories import make_key, make_org
from tests.fakes.openai_upstream import FakeOpenAIUpstream

KEY_ENV = "SY_TEST_MISSING_PLATFORM_KEY"
CATALOG = """
providers:
  - slug: keyless
    name: Keyless Cloud
    api_format: openai
    base_url: "{url}/v1"
    api_key_env: SY_TEST_MISSING_PLATFORM_KEY
    timeouts: {{connect: 2, first_byte: 10, between_chunks: 10, total: 30}}
  - slug: simulated
    name: Switchyard Simulator
    api_format: simulated
    base_url: "sim://local"
models:
  - slug: test/keyless-only
    name: "Test: only a keyless provider"
    context_length: 32768
    endpoints:
      - provider: keyless
        provider_model_id: gpt-4o-mini
        pricing: {{prompt: "0.15", completion: "0.60"}}
  - slug: test/keyless-or-sim
    name: "Test: keyless or simulated"
    context_length: 32768
    endpoints:
      - provider: keyless
        provider_model_id: gpt-4o-mini
        pricing: {{prompt: "0.01", completion: "0.01"}}
      - provider: simulated
        provider_model_id: sim-1
        pricing: {{prompt: "0.15", completion: "0.60"}}
"""
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def upstream():
    server = FakeOpenAIUpstream(api_key=None).start()
    yield server
    server.stop()


@pytest.fixture
def keyless_catalog(upstream, transactional_db, tmp_path, monkeypatch):
    from routing.catalog.loader import catalog_load
    from routing.catalog.snapshot import catalog

    monkeypatch.delenv(KEY_ENV, raising=False)
    upstream.reset()
    path = tmp_path / "keyless.yaml"
    path.write_text(CATALOG.format(url=upstream.base_url))
    catalog_load([path])
    catalog.clear()
    byok.forget_local()
    yield Provider.objects.get(slug="keyless")
    byok.forget_local()


def _chat(live, secret, model):
    return httpx.post(
        live.api + "/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": model, "messages": HELLO},
        timeout=30,
    )


def _models(live):
    return {m["id"]: m for m in httpx.get(live.api + "/models").json()["data"]}


def test_models_list_marks_models_that_cannot_answer_here(live, keyless_catalog, monkeypatch):
    models = _models(live)
    only = models["test/keyless-only"]
    assert only["available"] is False
    assert KEY_ENV in only["unavailable_reason"]
    assert models["test/keyless-or-sim"]["available"] is True
    assert models["test/keyless-or-sim"]["unavailable_reason"] is None
    # The OpenRouter shape is kept otherwise.
    assert {"id", "name", "pricing", "context_length", "architecture", "top_provider"} <= set(only)

    eps = httpx.get(live.api + "/models/test/keyless-or-sim/endpoints").json()["data"]["endpoints"]
    by_tag = {e["tag"]: e for e in eps}
    assert by_tag["keyless"]["available"] is False
    assert KEY_ENV in by_tag["keyless"]["unavailable_reason"]
    assert by_tag["simulated"]["available"] is True

    monkeypatch.setenv(KEY_ENV, "sk-now-set-" + "x" * 20)
    assert _models(live)["test/keyless-only"]["available"] is True


def test_an_admin_can_hide_them(live, keyless_catalog):
    with override_settings(SWITCHYARD_HIDE_UNAVAILABLE_MODELS=True):
        models = _models(live)
    assert "test/keyless-only" not in models
    assert "test/keyless-or-sim" in models


def test_a_request_only_keyless_endpoints_could_serve_fails_fast_naming_the_variable(
    live, keyless_catalog, upstream
):
    org = make_org(credits="5")
    _, secret = make_key(org)
    resp = _chat(live, secret, "test/keyless-only")
    assert resp.status_code == 503, resp.text
    error = resp.json()["error"]
    assert error["code"] == 503
    assert KEY_ENV in error["message"]
    assert len(upstream.requests) == 0


def test_keyless_endpoints_are_skipped_not_tried(live, keyless_catalog, upstream):
    org = make_org(credits="5")
    _, secret = make_key(org)
    # The keyless endpoint is the cheaper one, so the router would try it first if it were a candidate.
    resp = _chat(live, secret, "test/keyless-or-sim")
    assert resp.status_code == 200, resp.text
    assert resp.json()["provider"] == "Switchyard Simulator"
    assert len(upstream.requests) == 0


def test_the_organisations_own_key_makes_them_usable(live, keyless_catalog, upstream):
    org = make_org(credits="5")
    _, secret = make_key(org)
    provider_key_save(
        organization=org, provider=keyless_catalog, api_key="orgkey-" + "q" * 30, allow_platform_fallback=True
    )
    resp = _chat(live, secret, "test/keyless-only")
    assert resp.status_code == 200, resp.text
    auths = [r.authorization for r in upstream.requests if r.path.endswith("/chat/completions")]
    assert auths == ["Bearer orgkey-" + "q" * 30]


def test_the_model_browser_marks_them_and_hides_them_when_asked(keyless_catalog, client):
    page = client.get("/models").content.decode()
    assert "test/keyless-only" in page and 'data-testid="unavailable"' in page
    assert page.count('data-testid="unavailable"') == 1
    with override_settings(SWITCHYARD_HIDE_UNAVAILABLE_MODELS=True):
        page = client.get("/models").content.decode()
    assert "test/keyless-only" not in page and "test/keyless-or-sim" in page
