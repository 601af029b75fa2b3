"""Routing through the live server with the openai SDK and fake upstreams: each `provider` preference
end to end (which fake was hit, the response's provider, the generation record's attempts), model
fallbacks, variants, organisation defaults, validation errors, and the price-weighted distribution."""

from __future__ import annotations

import math

import openai
import pytest

from routing.catalog.snapshot import catalog
from routing.request import completion_request
from routing.router import TYPICAL_COMPLETION_TOKENS, request_cost
from tests.fakes.openai_upstream import Behaviour
from tests.routing.route_env import *  # noqa: F403 - the shared fixtures
from tests.routing.route_env import HELLO, generation, hits

pytestmark = pytest.mark.django_db(transaction=True)

NAMES = {"r-a": "Route A", "r-b": "Route B", "r-c": "Route C"}
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]


def ask(client: openai.OpenAI, provider: dict | None = None, model: str = "test/route", **extra):
    body = {"provider": provider} if provider is not None else {}
    body.update(extra.pop("body", {}))  # fields the SDK has no argument for
    return client.chat.completions.create(model=model, messages=HELLO, extra_body=body, **extra)


@pytest.mark.parametrize(
    ("provider", "extra", "served"),
    [
        pytest.param({"order": ["r-c", "r-a"]}, {}, "r-c", id="order"),
        pytest.param({"only": ["r-b"]}, {}, "r-b", id="only"),
        pytest.param({"ignore": ["r-a", "r-b"]}, {}, "r-c", id="ignore"),
        pytest.param({"quantizations": ["bf16"]}, {}, "r-b", id="quantizations"),
        pytest.param({"data_collection": "deny", "sort": "price"}, {}, "r-b", id="data_collection"),
        pytest.param({"zdr": True}, {}, "r-b", id="zdr"),
        pytest.param({"max_price": {"prompt": 0.15}}, {}, "r-a", id="max_price.prompt"),
        pytest.param(
            {"max_price": {"completion": "1", "prompt": 1}, "sort": "price"}, {}, "r-a", id="max_price"
        ),
        pytest.param(
            {"require_parameters": True, "sort": "price"},
            {"body": {"top_k": 5}},
            "r-b",
            id="require_parameters",
        ),
        pytest.param({"sort": "price"}, {"body": {"top_k": 5}}, "r-a", id="unsupported-parameter-dropped"),
        pytest.param({"sort": "price"}, {}, "r-a", id="sort-price"),
        pytest.param({"sort": "price"}, {"max_tokens": 2000}, "r-b", id="max_tokens-fit"),
        pytest.param({"sort": "price"}, {"tools": TOOLS}, "r-a", id="tools-capability"),
        pytest.param({"sort": "price"}, {"response_format": {"type": "json_object"}}, "r-b", id="json-mode"),
    ],
)
def test_each_preference_routes_to_the_expected_provider(
    client, live, secret, upstreams, provider, extra, served
):
    resp = ask(client, provider, **extra)
    assert resp.model_extra["provider"] == NAMES[served]
    assert resp.model == "test/route"
    counts = hits(upstreams)
    assert counts[served] == 1 and sum(counts.values()) == 1, counts
    record = generation(live.api, secret, resp.id)
    assert record["provider_name"] == served
    assert [a["provider"] for a in record["attempts"]] == [served]


def test_allow_fallbacks_false_stops_after_the_ordered_providers(http, upstreams):
    upstreams.a.push("fail_500")
    resp = http.post(
        "/chat/completions",
        json={
            "model": "test/route",
            "messages": HELLO,
            "provider": {"order": ["r-a"], "allow_fallbacks": False},
        },
    )
    assert resp.status_code == 502
    assert [a["provider"] for a in resp.json()["error"]["metadata"]["attempts"]] == ["r-a"]
    assert hits(upstreams) == {"r-a": 1, "r-b": 0, "r-c": 0}
    # With fallbacks allowed, the same failure moves on.
    upstreams.a.push("fail_500")
    resp = http.post(
        "/chat/completions",
        json={"model": "test/route", "messages": HELLO, "provider": {"order": ["r-a", "r-c"]}},
    )
    assert resp.status_code == 200 and resp.json()["provider"] == "Route C"


def _warm(client, latencies: dict[str, int], upstreams) -> None:
    """Give each provider measured latency and throughput: one pinned request each."""
    servers = dict(zip(("r-a", "r-b", "r-c"), upstreams.all(), strict=True))
    for slug, ms in latencies.items():
        servers[slug].set_default(Behaviour(latency_ms=ms))
        ask(client, {"order": [slug], "allow_fallbacks": False})
        servers[slug].set_default(Behaviour())
    for server in upstreams.all():
        server.clear_requests()


def _refresh_shared_view() -> None:
    """Full mode: processes re-read the shared moving averages every few seconds; the live server runs
    in this process, so read them now rather than wait."""
    from routing.health import book
    from switchyard.shared import redis_enabled

    if redis_enabled():
        book._refresh_sync()


def test_sort_latency_and_throughput_and_nitro_use_measured_speed(client, live, upstreams):
    _warm(client, {"r-a": 400, "r-b": 150, "r-c": 10}, upstreams)
    _refresh_shared_view()
    for provider, model in (
        ({"sort": "latency"}, "test/route"),
        ({"sort": "throughput"}, "test/route"),
        (None, "test/route:nitro"),
    ):
        resp = ask(client, provider, model=model)
        assert resp.model_extra["provider"] == "Route C", (provider, model)
    # preferred_max_latency (seconds) moves the cheap-but-slow provider behind the ones that meet it.
    resp = ask(client, {"sort": "price", "preferred_max_latency": 0.3})
    assert resp.model_extra["provider"] == "Route B"
    resp = ask(client, {"sort": "price", "preferred_min_throughput": {"p50": 1000000}})
    assert resp.model_extra["provider"] == "Route A"  # nobody meets it: price order stands


def test_floor_variant_takes_the_cheapest(client, upstreams):
    resp = ask(client, model="test/route:floor")
    assert resp.model_extra["provider"] == "Route A"


def test_free_variant_only_uses_free_endpoints(client, live, secret, upstreams, org):
    resp = ask(client, model="test/cheapo:free")
    assert resp.model_extra["provider"] == "Route Free"
    assert upstreams.c.last_request.json["model"] == "cheapo-free"
    record = generation(live.api, secret, resp.id)
    assert record["total_cost"] == 0


def test_model_fallbacks_answer_from_the_next_model(client, live, secret, upstreams):
    resp = client.chat.completions.create(
        model="test/down",
        messages=HELLO,
        extra_body={"models": ["test/route"], "provider": {"sort": "price"}},
    )
    assert resp.model == "test/route" and resp.model_extra["provider"] == "Route A"
    record = generation(live.api, secret, resp.id)
    assert record["model"] == "test/route"
    assert [(a["model"], a["provider"], a["status"]) for a in record["attempts"]] == [
        ("test/down", "r-dead", 502),
        ("test/route", "r-a", 200),
    ]
    assert record["attempts"][0]["reason"] == "connect"


def test_model_fallbacks_stream_says_which_model_answered(client, upstreams):
    chunks = list(
        client.chat.completions.create(
            model="test/down",
            messages=HELLO,
            stream=True,
            extra_body={"models": ["test/route"], "provider": {"sort": "price"}},
        )
    )
    assert {c.model for c in chunks} == {"test/route"}


def test_org_defaults_merge_with_the_request(client, org, upstreams):
    org.routing_defaults = {"ignore": ["r-a"], "data_collection": "deny"}
    org.save(update_fields=["routing_defaults"])
    from accounts.services import organization_keys_invalidate

    organization_keys_invalidate(organization=org)
    resp = ask(client, {"sort": "price"})
    assert resp.model_extra["provider"] == "Route B"
    # The request cannot switch the organisation's deny back to allow, nor un-ignore r-a.
    resp = ask(client, {"sort": "price", "data_collection": "allow", "order": ["r-a"]})
    assert resp.model_extra["provider"] == "Route B"
    assert hits(upstreams)["r-a"] == 0


@pytest.mark.parametrize(
    ("provider", "field"),
    [
        ({"sort": "speed"}, "provider.sort"),
        ({"max_price": {"prompt": "lots"}}, "provider.max_price.prompt"),
        ({"quantizations": "fp8"}, "provider.quantizations"),
        ({"allow_fallbacks": "sometimes"}, "provider.allow_fallbacks"),
        ({"fastest": True}, "provider"),
    ],
)
def test_bad_preferences_are_json_400s_naming_the_field(http, upstreams, provider, field):
    resp = http.post(
        "/chat/completions", json={"model": "test/route", "messages": HELLO, "provider": provider}
    )
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["code"] == 400 and error["metadata"]["field"] == field
    assert error["message"].startswith(field)
    assert sum(hits(upstreams).values()) == 0


def test_no_candidate_is_a_503_saying_why_each_was_excluded(http, upstreams):
    resp = http.post(
        "/chat/completions",
        json={"model": "test/route", "messages": HELLO, "provider": {"zdr": True, "quantizations": ["fp8"]}},
    )
    assert resp.status_code == 503
    excluded = resp.json()["error"]["metadata"]["excluded"]
    assert excluded["r-a"].startswith("no zero data retention")
    assert excluded["r-b"].startswith("quantization bf16")


def test_default_routing_is_price_weighted_over_many_requests(client, upstreams):
    n = 240
    for _ in range(n):
        ask(client)
    counts = hits(upstreams)
    assert sum(counts.values()) == n
    snapshot = catalog._snapshot
    assert snapshot is not None
    estimate = completion_request({"messages": HELLO}, kind="chat", models=["test/route"]).bound.size // 4
    costs = {
        ep.provider_slug: request_cost(ep, estimate, TYPICAL_COMPLETION_TOKENS)
        for ep in snapshot.models["test/route"].endpoints
    }
    weights = {slug: 1 / (cost * cost) for slug, cost in costs.items()}
    expected = {slug: n * w / sum(weights.values()) for slug, w in weights.items()}
    # 1/p^2 with prices 1 : 2 : 3 gives about 73%, 18% and 8% of first choices.
    assert counts["r-a"] > counts["r-b"] > counts["r-c"] > 0
    chi2 = sum((counts[s] - e) ** 2 / e for s, e in expected.items())
    # Two degrees of freedom: P(chi2 > 27.6) = exp(-27.6 / 2) = 1e-6 under the expected distribution.
    assert chi2 < 27.6, (counts, expected)
    assert math.isclose(sum(expected.values()), n)


def test_the_distribution_check_would_catch_uniform_routing(upstreams):
    """The bound above is tight enough to fail for routing that ignores price (a uniform split)."""
    n = 240
    expected = {"r-a": n * 0.735, "r-b": n * 0.184, "r-c": n * 0.082}
    uniform = {slug: n / 3 for slug in expected}
    chi2 = sum((uniform[s] - e) ** 2 / e for s, e in expected.items())
    assert chi2 > 27.6
