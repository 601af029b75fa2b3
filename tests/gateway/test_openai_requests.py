"""What goes upstream and what comes back: the platform key (never the customer's), passed-through
fields and per-provider quirks, tools and JSON mode, validation 400s, legacy completions, usage and
exact cost (reported or estimated)."""

from __future__ import annotations

import json
from decimal import Decimal

import openai
import pytest

from routing.gateway.tokens import count_messages, count_text
from tests.fakes.openai_upstream import Behaviour
from tests.gateway.openai_env import *  # noqa: F403 - the shared fixtures
from tests.gateway.openai_env import HELLO, KEYS, WEATHER, M, balance, expected_cost, generation, route

pytestmark = pytest.mark.django_db(transaction=True)


def test_platform_key_goes_upstream_never_the_customers(client, secret, upstreams):
    client.chat.completions.create(
        model="test/gpt", messages=HELLO, user="customer-42", extra_body=route("fake-a")
    )
    for stream in (False, True):
        result = client.chat.completions.create(
            model="test/gpt", messages=HELLO, stream=stream, extra_body=route("fake-b")
        )
        if stream:
            list(result)
    sent = upstreams.a.requests[-1]
    assert sent.authorization == f"Bearer {KEYS['a']}"
    assert sent.json["user"] == "customer-42"
    assert {r.authorization for r in upstreams.b.requests} == {f"Bearer {KEYS['b']}"}
    for request in upstreams.a.requests + upstreams.b.requests:
        assert secret not in str(request.headers) and secret not in request.text
        assert "sk-sy-" not in str(request.headers) and "sk-sy-" not in request.text
        # Switchyard's own fields stay home.
        assert not {"provider", "models", "usage"} & set(request.json)


def test_sampling_fields_pass_through_and_unsupported_ones_are_dropped(client, upstreams):
    client.chat.completions.create(
        model="test/gpt",
        messages=HELLO,
        temperature=0.3,
        top_p=0.9,
        stop=["\n\n"],
        seed=7,
        max_tokens=64,
        logprobs=True,
        extra_body=route("fake-a"),
    )
    sent = upstreams.a.last_request.json
    assert sent["model"] == "gpt-4o-mini"
    assert (sent["temperature"], sent["top_p"], sent["stop"], sent["seed"]) == (0.3, 0.9, ["\n\n"], 7)
    assert sent["max_tokens"] == 64 and "max_completion_tokens" not in sent
    assert sent["logprobs"] is True
    # fake-c lists only temperature, max_tokens and stop.
    client.chat.completions.create(
        model="test/gpt", messages=HELLO, temperature=0.3, top_p=0.9, seed=7, extra_body=route("fake-c")
    )
    sent = upstreams.c.last_request.json
    assert sent["temperature"] == 0.3 and "top_p" not in sent and "seed" not in sent


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_quirk_openai_wants_max_completion_tokens(client, upstreams, field):
    client.chat.completions.create(
        model="test/gpt", messages=HELLO, extra_body={**route("openai"), field: 33}
    )
    sent = upstreams.c.last_request.json
    assert sent["max_completion_tokens"] == 33 and "max_tokens" not in sent
    client.chat.completions.create(
        model="test/gpt", messages=HELLO, extra_body={**route("fake-b"), field: 33}
    )
    sent = upstreams.b.last_request.json
    assert sent["max_tokens"] == 33 and "max_completion_tokens" not in sent


def test_tools_and_tool_choice_pass_through_and_calls_come_back(client, upstreams):
    choice = {"type": "function", "function": {"name": "get_weather"}}
    resp = client.chat.completions.create(
        model="test/gpt", messages=HELLO, tools=[WEATHER], tool_choice=choice, extra_body=route("fake-a")
    )
    sent = upstreams.a.last_request.json
    assert sent["tools"] == [WEATHER] and sent["tool_choice"] == choice
    call = resp.choices[0].message.tool_calls[0]
    assert resp.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {
        "location": "Paris"
    }

    stream = client.chat.completions.create(
        model="test/gpt", messages=HELLO, tools=[WEATHER], stream=True, extra_body=route("fake-a")
    )
    args, names, finish = "", set(), None
    for chunk in stream:
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                args += tc.function.arguments or ""
                if tc.function.name:
                    names.add(tc.function.name)
            finish = c.finish_reason or finish
    assert names == {"get_weather"} and json.loads(args) == {"location": "Paris"} and finish == "tool_calls"


@pytest.mark.parametrize(
    "fmt",
    [
        {"type": "json_object"},
        {
            "type": "json_schema",
            "json_schema": {
                "name": "city",
                "schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        },
    ],
    ids=["json_object", "json_schema"],
)
async def test_json_mode_passes_through(aclient, upstreams, fmt):
    resp = await aclient.chat.completions.create(
        model="test/gpt", messages=HELLO, response_format=fmt, extra_body=route("fake-a")
    )
    assert upstreams.a.last_request.json["response_format"] == fmt
    assert isinstance(json.loads(resp.choices[0].message.content), dict)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"n": 2}, "n"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": []}, "messages"),
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stream": "yes"}, "stream"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"stream_options": {"include_usage": "please"}}, "stream_options.include_usage"),
        ({"model": ""}, "model"),
    ],
)
def test_validation_400_names_the_field(raw, upstreams, change, field):
    payload = {"model": "test/gpt", "messages": HELLO, **change}
    resp = raw.post("/chat/completions", json=payload)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["code"] == 400 and error["message"].startswith(f"{field}:")
    assert error["metadata"]["field"] == field
    assert all(not u.requests for u in upstreams.all())


def test_n_above_one_is_refused_clearly_through_the_sdk(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="test/gpt", messages=HELLO, n=3)
    assert "only n=1 is supported" in caught.value.body["message"]


def test_unknown_model_is_404(raw):
    resp = raw.post("/chat/completions", json={"model": "test/nope", "messages": HELLO})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == 404


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_legacy_completions(client, live, secret, upstreams, stream):
    result = client.completions.create(
        model="test/instruct",
        prompt="Once upon a time",
        max_tokens=20,
        stream=stream,
        extra_body=route("fake-a"),
    )
    sent = upstreams.a.last_request
    assert sent.path == "/v1/completions" and sent.json["prompt"] == "Once upon a time"
    assert sent.json["model"] == "gpt-3.5-turbo-instruct" and sent.json["max_tokens"] == 20
    if stream:
        chunks = list(result)
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        gen_id = chunks[0].id
        assert chunks[0].object == "text_completion"
    else:
        text, gen_id = result.choices[0].text, result.id
        assert result.object == "text_completion"
        prompt, completion = result.usage.prompt_tokens, result.usage.completion_tokens
        cost = (prompt * Decimal("1.50") + completion * Decimal("2.00")) / M
        assert Decimal(str(result.usage.model_extra["cost"])) == cost
    assert text.strip()
    record = generation(live, secret, gen_id)
    assert record["api_type"] == "completions" and record["streamed"] is stream


def test_reported_usage_is_charged_exactly(client, live, secret, upstreams, org):
    usage = {
        "prompt_tokens": 10_001,
        "completion_tokens": 2_003,
        "total_tokens": 12_004,
        "prompt_tokens_details": {"cached_tokens": 4_000},
        "completion_tokens_details": {"reasoning_tokens": 1_000},
    }
    upstreams.a.push(Behaviour(kind="ok", usage=usage))
    before = balance(org)
    resp = client.chat.completions.create(model="test/gpt", messages=HELLO, extra_body=route("fake-a"))
    # fake-a: prompt 0.15, cache read 0.075, completion (and reasoning) 0.60 per million.
    cost = (6_001 * Decimal("0.15") + 4_000 * Decimal("0.075") + 2_003 * Decimal("0.60")) / M
    assert Decimal(str(resp.usage.model_extra["cost"])) == cost
    assert resp.usage.prompt_tokens_details.cached_tokens == 4_000
    assert resp.usage.completion_tokens_details.reasoning_tokens == 1_000
    record = generation(live, secret, resp.id)
    assert Decimal(str(record["total_cost"])) == cost and record["usage_estimated"] is False
    assert (record["native_tokens_cached"], record["native_tokens_reasoning"]) == (4_000, 1_000)
    assert balance(org) == before - cost


def test_per_request_price_is_charged(client, upstreams):
    resp = client.chat.completions.create(model="test/gpt", messages=HELLO, extra_body=route("fake-c"))
    u = resp.usage
    cost = expected_cost("fake-c", u.prompt_tokens, u.completion_tokens) + Decimal("0.0001")
    assert Decimal(str(u.model_extra["cost"])) == cost


def test_usage_estimated_with_tiktoken_when_the_upstream_omits_it(client, live, secret, upstreams):
    content = "The quick brown fox jumps over the lazy dog, twice: über-naïve café."
    upstreams.a.push(Behaviour(kind="ok", content=content, usage=None))
    resp = client.chat.completions.create(model="test/gpt", messages=HELLO, extra_body=route("fake-a"))
    prompt, completion = count_messages(HELLO), count_text(content)
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (prompt, completion)
    assert Decimal(str(resp.usage.model_extra["cost"])) == expected_cost("fake-a", prompt, completion)
    record = generation(live, secret, resp.id)
    assert record["usage_estimated"] is True and record["tokens_completion"] == completion


async def test_async_client_whole_answer(aclient, upstreams):
    resp = await aclient.chat.completions.create(model="test/gpt", messages=HELLO, extra_body=route("fake-b"))
    assert resp.model_extra["provider"] == "Fake B" and resp.id.startswith("gen-")
    assert resp.usage.prompt_tokens > 0 and "Hello from fake-openai" in resp.choices[0].message.content
