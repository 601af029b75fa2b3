"""`GET /api/v1/models` and `/models/{author}/{slug}/endpoints`: OpenRouter's shapes, live catalog changes."""

from __future__ import annotations

from decimal import Decimal

import pytest
import yaml
from rest_framework.test import APIClient

from routing import services
from routing.catalog.loader import catalog_load
from routing.models import Endpoint, Provider
from tests.factories import make_key, make_org

CATALOG = {
    "providers": [
        {
            "slug": "alpha",
            "name": "Alpha Cloud",
            "api_format": "openai",
            "base_url": "https://alpha.example/v1",
        },
        {"slug": "beta", "name": "Beta AI", "api_format": "openai", "base_url": "https://beta.example/v1"},
    ],
    "models": [
        {
            "slug": "acme/small",
            "name": "Acme: Small",
            "description": "A small model.",
            "context_length": 128000,
            "input_modalities": ["text", "image"],
            "output_modalities": ["text"],
            "endpoints": [
                {
                    "provider": "alpha",
                    "provider_model_id": "small-v1",
                    "pricing": {
                        "prompt": "0.15",
                        "completion": "0.60",
                        "cache_read": "0.075",
                        "request": "0.001",
                        "image": "0.0002",
                    },
                    "context_length": 64000,
                    "max_completion_tokens": 16384,
                    "supported_parameters": ["temperature", "max_tokens", "tools"],
                },
                {
                    "provider": "beta",
                    "provider_model_id": "acme-small",
                    "pricing": {"prompt": "0.20", "completion": "0.80"},
                    "quantization": "fp8",
                    "supported_parameters": ["temperature", "seed"],
                },
            ],
        },
        {
            "slug": "other/large",
            "name": "Other: Large",
            "context_length": 200000,
            "endpoints": [
                {
                    "provider": "beta",
                    "provider_model_id": "large",
                    "pricing": {"prompt": "3", "completion": "15"},
                    "max_completion_tokens": 8192,
                },
            ],
        },
    ],
}


@pytest.fixture
def catalog_file(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(CATALOG, sort_keys=False))
    return path


@pytest.fixture
def loaded(db, catalog_file):
    return catalog_load([catalog_file])


def _models(client: APIClient) -> dict[str, dict]:
    response = client.get("/api/v1/models")
    assert response.status_code == 200, response.content
    return {m["id"]: m for m in response.json()["data"]}


def test_models_list_needs_no_auth_and_has_openrouter_shape(loaded):
    models = _models(APIClient())
    assert set(models) == {"acme/small", "other/large"}
    small = models["acme/small"]
    assert small["name"] == "Acme: Small"
    assert small["description"] == "A small model."
    assert small["context_length"] == 128000
    assert isinstance(small["created"], int) and small["created"] > 1_600_000_000
    assert small["architecture"]["modality"] == "text+image->text"
    assert small["architecture"]["input_modalities"] == ["text", "image"]
    assert small["architecture"]["output_modalities"] == ["text"]
    assert isinstance(small["architecture"]["tokenizer"], str)

    # Prices: strings, USD per token (request/image: per request/image), from the cheapest endpoint.
    pricing = small["pricing"]
    assert {"prompt", "completion", "request", "image"} <= set(pricing)
    assert all(isinstance(v, str) for v in pricing.values())
    assert pricing["prompt"] == "0.00000015"
    assert pricing["completion"] == "0.0000006"
    assert pricing["request"] == "0.001"
    assert pricing["image"] == "0.0002"
    assert pricing["input_cache_read"] == "0.000000075"
    assert models["other/large"]["pricing"]["prompt"] == "0.000003"
    assert models["other/large"]["pricing"]["completion"] == "0.000015"
    assert models["other/large"]["pricing"]["request"] == "0"
    for model in models.values():
        for value in model["pricing"].values():
            assert "e" not in value.lower()  # never exponent notation
            Decimal(value)

    assert small["top_provider"] == {
        "context_length": 64000,
        "max_completion_tokens": 16384,
        "is_moderated": False,
    }
    assert small["supported_parameters"] == ["max_tokens", "seed", "temperature", "tools"]


def test_models_list_with_a_key_is_the_same(loaded):
    org = make_org(credits=None)
    _, secret = make_key(org)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert _models(client) == _models(APIClient())


def test_models_search_filters_by_slug_or_name(loaded):
    response = APIClient().get("/api/v1/models", {"search": "LARGE"})
    assert [m["id"] for m in response.json()["data"]] == ["other/large"]


def test_model_endpoints_shape(loaded):
    response = APIClient().get("/api/v1/models/acme/small/endpoints")
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert data["id"] == "acme/small"
    assert data["name"] == "Acme: Small"
    assert data["architecture"]["modality"] == "text+image->text"
    eps = data["endpoints"]
    assert [e["provider_name"] for e in eps] == ["Alpha Cloud", "Beta AI"]  # cheapest first
    alpha, beta = eps
    assert alpha["pricing"]["prompt"] == "0.00000015"
    assert alpha["pricing"]["completion"] == "0.0000006"
    assert beta["pricing"]["prompt"] == "0.0000002"
    assert alpha["context_length"] == 64000
    assert beta["context_length"] == 128000  # no endpoint value: inherits the model's
    assert alpha["max_completion_tokens"] == 16384
    assert beta["quantization"] == "fp8"
    assert alpha["quantization"] is None
    assert alpha["supported_parameters"] == ["max_tokens", "temperature", "tools"]
    for ep in eps:
        for field in ("name", "context_length", "pricing", "provider_name", "supported_parameters", "status"):
            assert field in ep


def test_unknown_model_endpoints_is_404_json(loaded):
    response = APIClient().get("/api/v1/models/acme/nope/endpoints")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == 404
    assert "acme/nope" in body["error"]["message"]


def test_disabling_an_endpoint_changes_the_lists(loaded, settings, django_capture_on_commit_callbacks):
    settings.SWITCHYARD_CATALOG_CHECK_SECONDS = 0  # check the catalog version on every request
    client = APIClient()
    before = _models(client)
    assert before["acme/small"]["pricing"]["prompt"] == "0.00000015"

    with django_capture_on_commit_callbacks(execute=True):
        services.endpoint_set_enabled(endpoint=Endpoint.objects.get(provider__slug="alpha"), enabled=False)
    after = _models(client)
    # The cheapest endpoint is gone: the model is now priced from the remaining one.
    assert after["acme/small"]["pricing"]["prompt"] == "0.0000002"
    eps = client.get("/api/v1/models/acme/small/endpoints").json()["data"]["endpoints"]
    assert [e["provider_name"] for e in eps] == ["Beta AI"]

    # A model with no enabled endpoint leaves the list.
    with django_capture_on_commit_callbacks(execute=True):
        services.endpoint_set_enabled(endpoint=Endpoint.objects.get(model__slug="other/large"), enabled=False)
    assert set(_models(client)) == {"acme/small"}

    with django_capture_on_commit_callbacks(execute=True):
        services.endpoint_set_enabled(endpoint=Endpoint.objects.get(provider__slug="alpha"), enabled=True)
    assert _models(client)["acme/small"]["pricing"]["prompt"] == "0.00000015"


def test_disabling_a_provider_removes_its_endpoints(loaded, settings, django_capture_on_commit_callbacks):
    settings.SWITCHYARD_CATALOG_CHECK_SECONDS = 0
    client = APIClient()
    assert set(_models(client)) == {"acme/small", "other/large"}
    with django_capture_on_commit_callbacks(execute=True):
        services.provider_set_enabled(provider=Provider.objects.get(slug="beta"), enabled=False)
    models = _models(client)
    assert set(models) == {"acme/small"}
    eps = client.get("/api/v1/models/acme/small/endpoints").json()["data"]["endpoints"]
    assert [e["provider_name"] for e in eps] == ["Alpha Cloud"]


def test_snapshot_is_reused_until_the_check_interval(loaded, settings, django_capture_on_commit_callbacks):
    """Within SWITCHYARD_CATALOG_CHECK_SECONDS the cached snapshot answers (no per-request rebuild)."""
    settings.SWITCHYARD_CATALOG_CHECK_SECONDS = 3600
    client = APIClient()
    assert "other/large" in _models(client)
    with django_capture_on_commit_callbacks(execute=True):
        services.endpoint_set_enabled(endpoint=Endpoint.objects.get(model__slug="other/large"), enabled=False)
    assert "other/large" in _models(client)  # still the cached copy
    settings.SWITCHYARD_CATALOG_CHECK_SECONDS = 0
    assert "other/large" not in _models(client)


def test_the_asgi_fast_path_answers_what_the_drf_view_answers(live, catalog_file):
    """Through the real server `GET /api/v1/models` is answered from the snapshot by the gateway app
    (routing.gateway.app.handle_models_list); the DRF view behind Django answers the same document."""
    import time

    import httpx

    catalog_load([catalog_file])
    deadline = time.monotonic() + 10
    while not any(m["id"] == "acme/small" for m in httpx.get(f"{live.url}/api/v1/models").json()["data"]):
        assert time.monotonic() < deadline, "the live catalog never showed the loaded models"
        time.sleep(0.2)
    for params in ({}, {"search": "LARGE"}, {"search": "no-such-model"}):
        fast = httpx.get(f"{live.url}/api/v1/models", params=params)
        view = APIClient().get("/api/v1/models", params)
        assert fast.status_code == view.status_code == 200
        assert fast.headers["content-type"] == "application/json"
        assert fast.json() == view.json()
    # Other methods still reach the DRF view and its JSON errors.
    post = httpx.post(f"{live.url}/api/v1/models")
    assert post.status_code == 405 and post.json()["error"]["code"] == 405
