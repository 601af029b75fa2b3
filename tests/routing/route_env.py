"""Shared set-up for the routing tests through the live server: one model served by three fake OpenAI
upstreams (A, B, C) with different prices, quantizations, data policies and parameters, plus a dead
port, a free endpoint and a model for fallbacks. Test modules take the fixtures with
`from tests.routing.route_env import *`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.factories import make_key, make_org
from tests.gateway.openai_env import KEYS, upstreams

__all__ = ["client", "http", "org", "route_catalog", "secret", "upstreams"]

PARAMS_A = ["temperature", "max_tokens", "tools", "tool_choice"]
PARAMS_B = ["temperature", "max_tokens", "tools", "tool_choice", "response_format", "seed", "top_k"]
PARAMS_C = ["temperature", "max_tokens", "response_format", "seed"]
HELLO = [{"role": "user", "content": "Say hello to the router"}]
SLUGS = {"a": "r-a", "b": "r-b", "c": "r-c"}


def catalog_doc(base: dict[str, str], dead_url: str) -> dict[str, Any]:
    timeouts = {"connect": 2, "first_byte": 10, "between_chunks": 10, "total": 30}

    def provider(slug: str, name: str, url: str, key: str, **extra: Any) -> dict[str, Any]:
        return {
            "slug": slug,
            "name": name,
            "api_format": "openai",
            "base_url": f"{url}/v1",
            "api_key_env": f"SY_TEST_OAI_{key}_KEY",
            "timeouts": timeouts,
            **extra,
        }

    return {
        "providers": [
            provider("r-a", "Route A", base["a"], "A"),
            provider("r-b", "Route B", base["b"], "B"),
            provider("r-c", "Route C", base["c"], "C"),
            provider("r-free", "Route Free", base["c"], "C"),
            provider("r-dead", "Route Dead", dead_url, "A"),
        ],
        "models": [
            {
                "slug": "test/route",
                "name": "Test: routed",
                "context_length": 128000,
                "endpoints": [
                    {
                        "provider": "r-a",
                        "provider_model_id": "model-a",
                        "pricing": {"prompt": "0.10", "completion": "0.40", "cache_read": "0.05"},
                        "quantization": "fp8",
                        "data_policy": {"training": True},
                        "max_completion_tokens": 1000,
                        "supported_parameters": PARAMS_A,
                    },
                    {
                        "provider": "r-b",
                        "provider_model_id": "model-b",
                        "pricing": {"prompt": "0.20", "completion": "0.80", "cache_read": "0.10"},
                        "quantization": "bf16",
                        "data_policy": {"training": False, "zdr": True},
                        "max_completion_tokens": 4000,
                        "supported_parameters": PARAMS_B,
                    },
                    {
                        "provider": "r-c",
                        "provider_model_id": "model-c",
                        "pricing": {"prompt": "0.30", "completion": "1.20", "cache_read": "0.15"},
                        "quantization": "fp16",
                        "data_policy": {"training": False},
                        "max_completion_tokens": 8000,
                        "supported_parameters": PARAMS_C,
                    },
                ],
            },
            {
                "slug": "test/cheapo",
                "name": "Test: with a free endpoint",
                "context_length": 8000,
                "endpoints": [
                    {
                        "provider": "r-a",
                        "provider_model_id": "cheapo-a",
                        "pricing": {"prompt": "1", "completion": "1"},
                    },
                    {
                        "provider": "r-free",
                        "provider_model_id": "cheapo-free",
                        "pricing": {"prompt": "0", "completion": "0"},
                    },
                ],
            },
            {
                "slug": "test/down",
                "name": "Test: only a dead endpoint",
                "context_length": 8000,
                "endpoints": [
                    {
                        "provider": "r-dead",
                        "provider_model_id": "down",
                        "pricing": {"prompt": "0.1", "completion": "0.1"},
                    }
                ],
            },
        ],
    }


@pytest.fixture
def route_catalog(upstreams, transactional_db, tmp_path, monkeypatch):
    from routing.catalog.loader import catalog_load
    from routing.catalog.snapshot import catalog
    from routing.health import book

    for name, key in KEYS.items():
        monkeypatch.setenv(f"SY_TEST_OAI_{name.upper()}_KEY", key)
    for server in upstreams.all():
        server.reset()
    doc = catalog_doc(
        {n: s.base_url for n, s in zip("abc", upstreams.all(), strict=True)}, upstreams.dead_url
    )
    path = tmp_path / "route.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    summary = catalog_load([path])
    catalog.clear()
    book.reset()
    yield summary
    book.reset()
    for server in upstreams.all():
        server.reset()


@pytest.fixture
def org(live, route_catalog):
    return make_org(credits="5")


@pytest.fixture
def secret(org) -> str:
    return make_key(org)[1]


@pytest.fixture
def client(live, secret) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.api, api_key=secret, max_retries=0, timeout=30)


@pytest.fixture
def http(live, secret) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.api, headers={"Authorization": f"Bearer {secret}"}, timeout=30) as c:
        yield c


def endpoint_ids() -> dict[str, int]:
    from routing.models import Endpoint

    return {
        e.provider.slug: e.pk
        for e in Endpoint.objects.filter(model__slug="test/route").select_related("provider")
    }


def hits(upstreams: Any) -> dict[str, int]:
    """Chat requests each upstream has received for test/route, by provider slug."""
    return {
        SLUGS[name]: sum(1 for r in server.requests if r.path.endswith("/chat/completions"))
        for name, server in zip("abc", upstreams.all(), strict=True)
    }


def generation(base_url: str, secret: str, gen_id: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        resp = httpx.get(
            f"{base_url}/generation", params={"id": gen_id}, headers={"Authorization": f"Bearer {secret}"}
        )
        if resp.status_code == 200:
            return resp.json()["data"]
        assert resp.status_code == 404, resp.text
        if time.monotonic() > deadline:
            raise AssertionError(f"generation {gen_id} was not recorded within {timeout}s")
        time.sleep(0.05)
