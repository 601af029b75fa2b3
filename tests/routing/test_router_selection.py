"""The router's decisions, made on a real catalog (loaded from YAML into the database, read back as the
snapshot the gateway uses): candidate filtering by fit and capabilities, every `provider` preference,
organisation defaults, variants, model fallbacks, validation errors, and the price-weighted load
balancer's distribution over many decisions."""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal

import pytest
import yaml

from routing.catalog.loader import catalog_load
from routing.catalog.snapshot import build_snapshot
from routing.health import Outcome, book
from routing.request import Request, completion_request
from routing.router import plan, request_cost, weighted_shuffle
from switchyard.errors import BadRequest, NoProviderAvailable, NotFound

pytestmark = pytest.mark.django_db

ALL_PARAMS = ["temperature", "max_tokens", "tools", "tool_choice", "response_format", "seed", "top_k"]
CATALOG = {
    "providers": [
        {"slug": slug, "name": slug.title(), "api_format": "openai", "base_url": f"https://{slug}.example/v1"}
        for slug in ("cheap", "mid", "pricey", "free", "noparams")
    ],
    "models": [
        {
            "slug": "t/chat",
            "name": "T Chat",
            "context_length": 8000,
            "endpoints": [
                {
                    "provider": "cheap",
                    "provider_model_id": "c",
                    "pricing": {"prompt": "1", "completion": "2", "cache_read": "0.5"},
                    "quantization": "fp8",
                    "data_policy": {"training": True},
                    "supported_parameters": ["temperature", "max_tokens", "tools", "tool_choice"],
                    "max_completion_tokens": 1000,
                    "context_length": 8000,
                },
                {
                    "provider": "mid",
                    "provider_model_id": "m",
                    "pricing": {"prompt": "2", "completion": "4"},
                    "quantization": "bf16",
                    "data_policy": {"training": False, "zdr": True},
                    "supported_parameters": ALL_PARAMS,
                    "max_completion_tokens": 4000,
                    "context_length": 32000,
                },
                {
                    "provider": "pricey",
                    "provider_model_id": "p",
                    "pricing": {"prompt": "3", "completion": "6", "request": "0.001", "image": "0.01"},
                    "quantization": "fp16",
                    "data_policy": {"training": False},
                    "supported_parameters": ["temperature", "max_tokens", "response_format", "seed"],
                    "context_length": 128000,
                },
            ],
        },
        {
            "slug": "t/backup",
            "name": "T Backup",
            "context_length": 8000,
            "endpoints": [
                {"provider": "mid", "provider_model_id": "b", "pricing": {"prompt": "5", "completion": "5"}}
            ],
        },
        {
            "slug": "t/vision",
            "name": "T Vision",
            "context_length": 8000,
            "input_modalities": ["text", "image"],
            "endpoints": [
                {"provider": "mid", "provider_model_id": "v", "pricing": {"prompt": "2", "completion": "2"}}
            ],
        },
        {
            "slug": "t/mixed",
            "name": "T Mixed",
            "context_length": 8000,
            "endpoints": [
                {
                    "provider": "cheap",
                    "provider_model_id": "x",
                    "pricing": {"prompt": "1", "completion": "1"},
                },
                {"provider": "free", "provider_model_id": "x", "pricing": {"prompt": "0", "completion": "0"}},
                {
                    "provider": "noparams",
                    "provider_model_id": "x",
                    "pricing": {"prompt": "2", "completion": "2"},
                },
            ],
        },
    ],
}
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(autouse=True)
def _embedded_health(settings):
    """These tests drive the in-process health book directly; the shared (Redis) book has its own tests."""
    settings.REDIS_URL = ""


@pytest.fixture
def snapshot(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(CATALOG, sort_keys=False))
    catalog_load([path])
    book.reset()
    yield build_snapshot()
    book.reset()


def req(model: str = "t/chat", *, models: list[str] | None = None, **fields) -> Request:
    body = {"messages": HELLO, "max_tokens": None, **fields}
    return completion_request(body, kind="chat", models=[model, *(models or [])])


def providers(snapshot, body, **kwargs) -> list[str]:
    return [c.endpoint.provider_slug for c in plan(snapshot, body, rng=random.Random(7), **kwargs)]


def endpoint_id(snapshot, model: str, provider: str) -> int:
    return next(e.id for e in snapshot.models[model].endpoints if e.provider_slug == provider)


# ---- fit and capabilities --------------------------------------------------------------------------


def test_max_tokens_and_context_limits_exclude_endpoints_that_cannot_fit(snapshot):
    assert set(providers(snapshot, req(max_tokens=900))) == {"cheap", "mid", "pricey"}
    assert set(providers(snapshot, req(max_tokens=2000))) == {"mid", "pricey"}  # cheap's output limit is 1000
    # 7,500 prompt tokens + 600 output do not fit cheap's 8k context; they fit mid's 32k and pricey's 128k.
    assert set(providers(snapshot, req(max_tokens=600), prompt_estimate=7500)) == {"mid", "pricey"}
    assert set(providers(snapshot, req(max_tokens=5000), prompt_estimate=30000)) == {"pricey"}
    with pytest.raises(NoProviderAvailable) as exc:
        plan(snapshot, req(max_tokens=5000), prompt_estimate=200_000)
    excluded = exc.value.metadata["excluded"]
    assert set(excluded) == {"cheap", "mid", "pricey"}
    assert "context length" in excluded["pricey"]
    assert exc.value.status == 503


def test_tools_and_json_mode_need_endpoints_that_support_them(snapshot):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert set(providers(snapshot, req(tools=tools))) == {"cheap", "mid"}
    json_mode = {"type": "json_object"}
    assert set(providers(snapshot, req(response_format=json_mode))) == {"mid", "pricey"}
    assert set(providers(snapshot, req(tools=tools, response_format=json_mode))) == {"mid"}


def test_images_need_a_model_that_takes_image_input(snapshot):
    image = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        }
    ]
    with pytest.raises(NoProviderAvailable) as exc:
        plan(snapshot, req(messages=image))
    assert exc.value.metadata["excluded"]["cheap"] == "model does not accept image input"
    cands = plan(snapshot, req(models=["t/vision"], messages=image))
    assert [c.model.slug for c in cands] == ["t/vision"]


# ---- provider preferences --------------------------------------------------------------------------


def test_order_puts_named_providers_first_and_allow_fallbacks_false_keeps_only_them(snapshot):
    assert providers(snapshot, req(provider={"order": ["pricey", "cheap"]})) == ["pricey", "cheap", "mid"]
    assert providers(snapshot, req(provider={"order": ["pricey", "cheap"], "allow_fallbacks": False})) == [
        "pricey",
        "cheap",
    ]
    # Without an order, allow_fallbacks false means the single best candidate.
    assert len(providers(snapshot, req(provider={"allow_fallbacks": False, "sort": "price"}))) == 1


def test_only_and_ignore_accept_slugs_or_names(snapshot):
    assert set(providers(snapshot, req(provider={"only": ["mid", "Pricey"]}))) == {"mid", "pricey"}
    assert set(providers(snapshot, req(provider={"ignore": ["Cheap"]}))) == {"mid", "pricey"}
    with pytest.raises(NoProviderAvailable) as exc:
        plan(snapshot, req(provider={"only": ["nobody"]}))
    assert exc.value.metadata["excluded"]["mid"] == "not in provider.only"


def test_quantizations_filter_by_level(snapshot):
    assert providers(snapshot, req(provider={"quantizations": ["fp8"]})) == ["cheap"]
    assert set(providers(snapshot, req(provider={"quantizations": ["bf16", "fp16"]}))) == {"mid", "pricey"}
    # Endpoints without a stated quantization count as "unknown".
    assert set(providers(snapshot, req("t/mixed", provider={"quantizations": ["unknown"]}))) == {
        "cheap",
        "free",
        "noparams",
    }


def test_data_collection_deny_and_zdr_follow_the_endpoint_data_policy(snapshot):
    assert set(providers(snapshot, req(provider={"data_collection": "deny"}))) == {"mid", "pricey"}
    assert set(providers(snapshot, req(provider={"data_collection": "allow"}))) == {"cheap", "mid", "pricey"}
    assert providers(snapshot, req(provider={"zdr": True})) == ["mid"]


def test_require_parameters_drops_endpoints_missing_any_requested_parameter(snapshot):
    body = req(seed=1, temperature=0.5)
    assert set(providers(snapshot, body)) == {
        "cheap",
        "mid",
        "pricey",
    }  # unsupported ones are dropped, not refused
    required = req(seed=1, temperature=0.5, provider={"require_parameters": True})
    assert set(providers(snapshot, required)) == {"mid", "pricey"}
    assert providers(snapshot, req(top_k=5, provider={"require_parameters": True})) == ["mid"]
    # An endpoint that lists no parameters cannot promise any.
    with pytest.raises(NoProviderAvailable) as exc:
        plan(snapshot, req("t/mixed", temperature=0.1, provider={"require_parameters": True}))
    assert "temperature" in exc.value.metadata["excluded"]["noparams"]


def test_max_price_per_field(snapshot):
    # prompt / completion in USD per million tokens; request and image in USD per unit.
    assert set(providers(snapshot, req(provider={"max_price": {"prompt": 2}}))) == {"cheap", "mid"}
    assert set(providers(snapshot, req(provider={"max_price": {"completion": "2.5"}}))) == {"cheap"}
    assert set(providers(snapshot, req(provider={"max_price": {"request": 0}}))) == {"cheap", "mid"}
    assert set(providers(snapshot, req(provider={"max_price": {"image": "0.02"}}))) == {
        "cheap",
        "mid",
        "pricey",
    }
    assert set(providers(snapshot, req(provider={"max_price": {"image": "0.005"}}))) == {"cheap", "mid"}
    with pytest.raises(NoProviderAvailable) as exc:
        plan(snapshot, req(provider={"max_price": {"prompt": "0.5"}}))
    assert "provider.max_price.prompt" in exc.value.metadata["excluded"]["cheap"]


def test_sort_price_orders_by_this_requests_price(snapshot):
    assert providers(snapshot, req(provider={"sort": "price"})) == ["cheap", "mid", "pricey"]
    assert providers(snapshot, req(provider={"sort": {"by": "price"}})) == ["cheap", "mid", "pricey"]


def _measure(snapshot, provider: str, latency_ms: int, tokens: int, model: str = "t/chat") -> None:
    ep = endpoint_id(snapshot, model, provider)
    book.record_local([Outcome(ep, ok=True, latency_ms=latency_ms, ttft_ms=latency_ms, tokens=tokens)])


@pytest.fixture
def measured(snapshot):
    # pricey is fastest to first token, mid has the highest throughput, cheap is slow at both.
    _measure(snapshot, "cheap", latency_ms=900, tokens=90)  # 100 tok/s end to end
    _measure(snapshot, "mid", latency_ms=400, tokens=400)  # 1000 tok/s
    _measure(snapshot, "pricey", latency_ms=100, tokens=20)  # 200 tok/s
    return snapshot


def test_sort_throughput_and_latency_use_measured_health(measured):
    assert providers(measured, req(provider={"sort": "throughput"})) == ["mid", "pricey", "cheap"]
    assert providers(measured, req(provider={"sort": "latency"})) == ["pricey", "mid", "cheap"]


def test_unmeasured_endpoints_sort_after_measured_ones_cheapest_first(snapshot):
    _measure(snapshot, "pricey", latency_ms=100, tokens=20)
    assert providers(snapshot, req(provider={"sort": "latency"})) == ["pricey", "cheap", "mid"]


def test_preferred_min_throughput_and_max_latency_deprioritise_without_excluding(measured):
    # cheap (100 tok/s) and pricey (200 tok/s) miss a 500 tok/s preference: mid goes first.
    got = providers(measured, req(provider={"sort": "price", "preferred_min_throughput": 500}))
    assert got == ["mid", "cheap", "pricey"]
    got = providers(measured, req(provider={"sort": "price", "preferred_min_throughput": {"p90": 150}}))
    assert got == ["mid", "pricey", "cheap"]
    # preferred_max_latency is in seconds: only pricey answers within 0.2 s.
    got = providers(measured, req(provider={"sort": "price", "preferred_max_latency": 0.2}))
    assert got == ["pricey", "cheap", "mid"]


def test_preferred_performance_can_promote_a_fallback_model(measured):
    _measure(measured, "mid", latency_ms=50, tokens=50, model="t/backup")
    body = req(models=["t/backup"], provider={"sort": "price", "preferred_max_latency": 0.08})
    cands = plan(measured, body, rng=random.Random(1))
    assert (cands[0].model.slug, cands[0].endpoint.provider_slug) == ("t/backup", "mid")


def test_sort_partition_none_sorts_across_fallback_models(snapshot):
    body = req("t/backup", models=["t/chat"], provider={"sort": {"by": "price", "partition": "none"}})
    cands = plan(snapshot, body)
    assert [(c.model.slug, c.endpoint.provider_slug) for c in cands] == [
        ("t/chat", "cheap"),
        ("t/chat", "mid"),
        ("t/backup", "mid"),
        ("t/chat", "pricey"),
    ]
    by_model = plan(snapshot, req("t/backup", models=["t/chat"], provider={"sort": "price"}))
    assert [c.model.slug for c in by_model] == ["t/backup", "t/chat", "t/chat", "t/chat"]


# ---- organisation defaults ---------------------------------------------------------------------------


def test_org_defaults_merge_with_request_preferences(snapshot):
    org = {"ignore": ["cheap"], "data_collection": "deny", "max_price": {"prompt": 2.5}}
    assert providers(snapshot, req(), org_defaults=org) == ["mid"]  # pricey's prompt price is 3
    # The request cannot undo the organisation's restrictions...
    body = req(provider={"data_collection": "allow", "ignore": ["pricey"], "max_price": {"prompt": 10}})
    assert providers(snapshot, body, org_defaults=org) == ["mid"]
    # ...but can tighten them, and sets what the organisation left open.
    with pytest.raises(NoProviderAvailable):
        plan(snapshot, req(provider={"max_price": {"prompt": 1}}), org_defaults=org)
    assert providers(snapshot, req(provider={"order": ["pricey"]}), org_defaults={"ignore": ["cheap"]}) == [
        "pricey",
        "mid",
    ]
    # zdr: true and `only` from the organisation hold too (only lists intersect).
    assert providers(snapshot, req(provider={"zdr": False}), org_defaults={"zdr": True}) == ["mid"]
    only = {"only": ["mid", "pricey"]}
    assert providers(snapshot, req(provider={"only": ["cheap", "pricey"]}), org_defaults=only) == ["pricey"]


# ---- variants and fallbacks ---------------------------------------------------------------------------


def test_variants_free_floor_nitro(measured):
    assert providers(measured, req("t/mixed:free")) == ["free"]
    assert providers(measured, req("t/chat:floor")) == ["cheap", "mid", "pricey"]
    assert providers(measured, req("t/chat:nitro")) == ["mid", "pricey", "cheap"]
    with pytest.raises(NoProviderAvailable) as exc:
        plan(measured, req("t/chat:free"))
    assert exc.value.metadata["excluded"]["cheap"] == "not free (:free variant)"


def test_model_fallbacks_come_after_the_first_models_endpoints(snapshot):
    cands = plan(snapshot, req(models=["t/backup"], provider={"sort": "price"}))
    assert [(c.model.slug, c.endpoint.provider_slug) for c in cands] == [
        ("t/chat", "cheap"),
        ("t/chat", "mid"),
        ("t/chat", "pricey"),
        ("t/backup", "mid"),
    ]
    # An unknown first model is skipped when a fallback exists; all unknown is a 404.
    assert [c.model.slug for c in plan(snapshot, req("nobody/nothing", models=["t/backup"]))] == ["t/backup"]
    with pytest.raises(NotFound):
        plan(snapshot, req("nobody/nothing"))


# ---- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "field"),
    [
        ({"order": "cheap"}, "provider.order"),
        ({"only": [1]}, "provider.only"),
        ({"ignore": "x"}, "provider.ignore"),
        ({"quantizations": ["fp7"]}, "provider.quantizations"),
        ({"allow_fallbacks": "no"}, "provider.allow_fallbacks"),
        ({"require_parameters": 1}, "provider.require_parameters"),
        ({"zdr": "yes"}, "provider.zdr"),
        ({"data_collection": "maybe"}, "provider.data_collection"),
        ({"sort": "speed"}, "provider.sort"),
        ({"sort": {"by": "speed"}}, "provider.sort.by"),
        ({"sort": {"by": "price", "partition": "all"}}, "provider.sort.partition"),
        ({"max_price": 3}, "provider.max_price"),
        ({"max_price": {"tokens": 1}}, "provider.max_price"),
        ({"max_price": {"prompt": "cheap"}}, "provider.max_price.prompt"),
        ({"max_price": {"completion": -1}}, "provider.max_price.completion"),
        ({"preferred_min_throughput": "fast"}, "provider.preferred_min_throughput"),
        ({"preferred_min_throughput": {"p42": 1}}, "provider.preferred_min_throughput"),
        ({"preferred_max_latency": {"p90": "slow"}}, "provider.preferred_max_latency.p90"),
        ({"fastest": True}, "provider"),
    ],
)
def test_bad_preferences_are_400s_naming_the_field(snapshot, provider, field):
    with pytest.raises(BadRequest) as exc:
        plan(snapshot, req(provider=provider))
    assert exc.value.status == 400
    assert exc.value.metadata["field"] == field
    assert exc.value.message.startswith(field)


# ---- default load balancing ----------------------------------------------------------------------------


def _expected_first_shares(snapshot, prompt: int = 100, completion: int = 256) -> dict[str, float]:
    costs = {
        ep.provider_slug: Decimal(request_cost(ep, prompt, completion))
        for ep in snapshot.models["t/chat"].endpoints
    }
    weights = {slug: 1 / (c * c) for slug, c in costs.items()}
    total = sum(weights.values())
    return {slug: float(w / total) for slug, w in weights.items()}


def test_default_load_balancing_is_weighted_by_inverse_square_price(snapshot):
    n = 6000
    rng = random.Random(20261127)
    firsts = Counter(
        plan(snapshot, req(), prompt_estimate=100, rng=rng)[0].endpoint.provider_slug for _ in range(n)
    )
    expected = _expected_first_shares(snapshot)
    # This request costs twice as much at mid as at cheap, and 4.6x at pricey (its per-request price
    # counts): about 77%, 19% and 3.6% of first choices.
    assert (
        0.76 < expected["cheap"] < 0.78 and 0.18 < expected["mid"] < 0.2 and 0.03 < expected["pricey"] < 0.04
    )
    chi2 = sum((firsts[s] - n * p) ** 2 / (n * p) for s, p in expected.items())
    # 2 degrees of freedom: P(chi2 > 18.4) = 0.0001. A fixed seed keeps this deterministic anyway.
    assert chi2 < 18.4, (firsts, expected)
    assert firsts["cheap"] > firsts["mid"] > firsts["pricey"] > 0


def test_weighted_shuffle_puts_free_first_and_orders_every_item(snapshot):
    rng = random.Random(3)
    items = ["a", "b", "free", "c"]
    costs = {"a": 10, "b": 20, "free": 0, "c": 30}
    for _ in range(50):
        order = weighted_shuffle(items, costs.__getitem__, rng)
        assert order[0] == "free" and sorted(order) == sorted(items)


def test_load_balancer_skips_endpoints_with_recent_failures(snapshot):
    cheap = endpoint_id(snapshot, "t/chat", "cheap")
    # Three failures among four attempts in the last 30 s is significant (the breaker is still closed).
    book.record_local(
        [Outcome(cheap, ok=True, latency_ms=10)] + [Outcome(cheap, ok=False, latency_ms=10)] * 3
    )
    assert book.state(cheap) == "closed" and book.degraded(cheap)
    rng = random.Random(5)
    orders = [providers_with(snapshot, rng) for _ in range(300)]
    assert all(o[-1] == "cheap" for o in orders)  # still a fallback, never first
    assert {o[0] for o in orders} == {"mid", "pricey"}
    # One failure is not significant.
    book.reset()
    book.record_local([Outcome(cheap, ok=False, latency_ms=10)])
    assert not book.degraded(cheap)
    assert Counter(providers_with(snapshot, rng)[0] for _ in range(300))["cheap"] > 150


def providers_with(snapshot, rng) -> list[str]:
    return [c.endpoint.provider_slug for c in plan(snapshot, req(), prompt_estimate=100, rng=rng)]


def test_open_circuits_go_last_even_when_ordered_first(snapshot, settings):
    cheap = endpoint_id(snapshot, "t/chat", "cheap")
    book.record_local([Outcome(cheap, ok=False, latency_ms=10)] * settings.SWITCHYARD_BREAKER_THRESHOLD)
    assert book.state(cheap) == "open"
    assert providers(snapshot, req(provider={"order": ["cheap", "mid"]})) == ["mid", "pricey", "cheap"]
    # Open circuits are still tried when nothing else is allowed.
    assert providers(snapshot, req(provider={"order": ["cheap"], "allow_fallbacks": False})) == ["cheap"]
