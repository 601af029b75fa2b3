"""End to end through the live server: Anthropic- and Gemini-format providers (fake upstreams on 127.0.0.1)
behind the OpenAI API, the Anthropic-compatible /messages front door, and /embeddings."""

from __future__ import annotations

import base64
import json
import time
from decimal import Decimal
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from routing.gateway.tokens import count_text
from routing.models import Generation
from switchyard.money import from_units
from tests.conftest import flush_usage
from tests.factories import make_key, make_org
from tests.fakes.anthropic_upstream import FakeAnthropicUpstream
from tests.fakes.anthropic_upstream import Script as AScript
from tests.fakes.gemini_upstream import PIXEL_PNG, FakeGeminiUpstream
from tests.fakes.gemini_upstream import Script as GScript
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.gateway.openai_env import open_holds, slow_settlements

pytestmark = pytest.mark.django_db(transaction=True)

CATALOG = Path(__file__).resolve().parent.parent / "data" / "native_catalog.yaml"
M = Decimal(1_000_000)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
PIXEL_URI = "data:image/png;base64," + base64.b64encode(PIXEL_PNG).decode()


@pytest.fixture(scope="module")
def fakes():
    servers = {
        "anthropic": FakeAnthropicUpstream().start(),
        "gemini": FakeGeminiUpstream().start(),
        "openai": FakeOpenAIUpstream().start(),
    }
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def native_catalog(fakes, transactional_db, tmp_path, monkeypatch):
    from routing.catalog.loader import catalog_load
    from routing.catalog.snapshot import catalog

    monkeypatch.setenv("SY_TEST_ANTHROPIC_KEY", fakes["anthropic"].api_key)
    monkeypatch.setenv("SY_TEST_GEMINI_KEY", fakes["gemini"].api_key)
    monkeypatch.setenv("SY_TEST_OPENAI_KEY", "sk-fake-openai")
    text = CATALOG.read_text()
    for name, server in fakes.items():
        text = text.replace(f"__{name.upper()}__", server.base_url)
        server.reset()
    path = tmp_path / "native.yaml"
    path.write_text(text)
    summary = catalog_load([path])
    catalog.clear()
    return summary


@pytest.fixture
def org(live, native_catalog):
    return make_org(credits="5")


@pytest.fixture
def secret(org):
    return make_key(org)[1]


@pytest.fixture
def oai(live, secret):
    return openai.OpenAI(base_url=live.api, api_key=secret, max_retries=0)


@pytest.fixture
def claude(live, secret):
    return anthropic.Anthropic(base_url=live.url + "/api", api_key=secret, max_retries=0)


def gen(gen_id: str) -> Generation:
    """The generation record; settlement is spawned just after the response is sent, so allow a moment."""
    deadline = time.monotonic() + 5
    while True:
        flush_usage()
        record = Generation.objects.filter(pk=gen_id).first()
        if record is not None or time.monotonic() > deadline:
            assert record is not None, f"no generation record for {gen_id}"
            return record
        time.sleep(0.02)


# ---- OpenAI API -> Anthropic-format provider -------------------------------------------------------


def test_anthropic_text_with_cache_and_reasoning_bills_exactly(oai, fakes):
    upstream = fakes["anthropic"]
    thinking = "First, consider the greeting. Then answer politely."
    upstream.push(
        AScript(input_tokens=100, cache_read=1000, cache_creation=200, output_tokens=50, thinking=thinking)
    )
    resp = oai.chat.completions.create(
        model="test/claude",
        messages=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hello there"}],
        max_tokens=4000,
        seed=5,  # unsupported by the endpoint: dropped, not forwarded
        extra_body={"reasoning": {"effort": "low"}},
    )
    sent = upstream.last
    assert sent.headers["x-api-key"] == upstream.api_key and sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.json["system"] == "Be kind." and sent.json["max_tokens"] == 4000
    assert sent.json["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert "seed" not in sent.json
    message = resp.choices[0].message
    assert "fake-anthropic" in message.content and "hello there" in message.content
    assert message.model_extra["reasoning"] == thinking
    assert resp.choices[0].finish_reason == "stop"
    usage = resp.usage
    reasoning = count_text(thinking)
    assert usage.prompt_tokens == 1300 and usage.completion_tokens == 50
    assert usage.prompt_tokens_details.cached_tokens == 1000
    assert usage.completion_tokens_details.reasoning_tokens == reasoning
    expected = (
        100 * Decimal("3.00") + 1000 * Decimal("0.30") + 200 * Decimal("3.75") + 50 * Decimal("15.00")
    ) / M
    assert Decimal(str(usage.model_extra["cost"])) == expected
    record = gen(resp.id)
    assert from_units(record.cost_units) == expected
    assert (record.tokens_cached, record.tokens_cache_write, record.tokens_reasoning) == (
        1000,
        200,
        reasoning,
    )
    assert record.provider == "fake-anthropic" and record.kind == "chat"


def test_anthropic_reasoning_can_be_excluded(oai, fakes):
    resp = oai.chat.completions.create(
        model="test/claude",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=3000,
        extra_body={"reasoning": {"max_tokens": 2000, "exclude": True}},
    )
    assert fakes["anthropic"].last.json["thinking"]["budget_tokens"] == 2000
    assert "reasoning" not in (resp.choices[0].message.model_extra or {})


def test_anthropic_images_and_tool_round_trip(oai, fakes):
    upstream = fakes["anthropic"]
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather where this was taken?"},
                {"type": "image_url", "image_url": {"url": PIXEL_URI}},
                {"type": "image_url", "image_url": {"url": "https://example.com/photo.jpg"}},
            ],
        }
    ]
    resp = oai.chat.completions.create(model="test/claude", messages=messages, tools=[WEATHER])
    blocks = upstream.last.json["messages"][0]["content"]
    assert blocks[1]["source"]["type"] == "base64" and blocks[1]["source"]["media_type"] == "image/png"
    assert blocks[2]["source"] == {"type": "url", "url": "https://example.com/photo.jpg"}
    assert upstream.last.json["tools"][0]["input_schema"]["required"] == ["city"]
    call = resp.choices[0].message.tool_calls[0]
    assert resp.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {
        "city": "Paris",
        "days": 7,
    }
    messages += [
        resp.choices[0].message.model_dump(exclude_none=True, include={"role", "content", "tool_calls"}),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ]
    resp = oai.chat.completions.create(model="test/claude", messages=messages, tools=[WEATHER])
    assert "sunny, 21C" in resp.choices[0].message.content
    last = upstream.last.json["messages"]
    assert last[1]["content"][0]["type"] == "tool_use" and last[2]["content"][0]["type"] == "tool_result"


def test_anthropic_streaming_tool_call_assembles(oai, fakes):
    stream = oai.chat.completions.create(
        model="test/claude",
        messages=[{"role": "user", "content": "weather in paris?"}],
        tools=[WEATHER],
        tool_choice="required",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert fakes["anthropic"].last.json["tool_choice"] == {"type": "any"}
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"id": tc.id, "name": tc.function.name, "args": ""})
                entry["args"] += tc.function.arguments or ""
    assert calls[0]["id"] == "toolu_fake01" and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["args"]) == {"city": "Paris", "days": 7}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_anthropic_streaming_text(oai, fakes):
    stream = oai.chat.completions.create(
        model="test/claude", messages=[{"role": "user", "content": "tell me"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.startswith("Hello from fake-anthropic.") and text.endswith("You said: tell me")


def test_anthropic_overloaded_fails_over_then_502(oai, fakes):
    upstream = fakes["anthropic"]
    upstream.push(AScript(kind="status", status=529))
    resp = oai.chat.completions.create(
        model="test/claude-failover",
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"provider": {"order": ["fake-anthropic", "simulated"]}},
    )
    assert resp.model_extra["provider"] == "Switchyard Simulator"
    attempts = gen(resp.id).attempts
    assert [a["provider"] for a in attempts] == ["fake-anthropic", "simulated"]
    assert attempts[0]["status"] == 502 and "Overloaded" in attempts[0]["error"]

    # A stream whose first event is an error also fails over: nothing had reached the client yet.
    upstream.push(AScript(kind="stream_error"))
    stream = oai.chat.completions.create(
        model="test/claude-failover",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_body={"provider": {"order": ["fake-anthropic", "simulated"]}},
    )
    chunks = list(stream)
    assert chunks[0].model_extra["provider"] == "Switchyard Simulator"

    upstream.push(AScript(kind="status", status=529))
    with pytest.raises(openai.APIStatusError) as err:
        oai.chat.completions.create(model="test/claude", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 502 and "Overloaded" in err.value.message


def test_anthropic_rate_limit_maps_to_502_with_retry(oai, fakes):
    fakes["anthropic"].push(
        AScript(kind="status", status=429, error_type="rate_limit_error", message="slow down")
    )
    with pytest.raises(openai.APIStatusError) as err:
        oai.chat.completions.create(model="test/claude", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 502 and "slow down" in err.value.message


# ---- OpenAI API -> Gemini-format provider ----------------------------------------------------------


def test_gemini_text_images_and_cost(oai, fakes, settings):
    settings.SWITCHYARD_IMAGE_FETCH_ALLOW_PRIVATE = True  # the image server is the fake on 127.0.0.1
    upstream = fakes["gemini"]
    upstream.push(GScript(prompt_tokens=400, cached_tokens=300, candidates_tokens=40, thoughts_tokens=25))
    resp = oai.chat.completions.create(
        model="test/gemini",
        messages=[
            {"role": "system", "content": "Describe images."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What are these?"},
                    {"type": "image_url", "image_url": {"url": PIXEL_URI}},
                    {"type": "image_url", "image_url": {"url": upstream.url("/images/redirect")}},
                ],
            },
        ],
        temperature=0.2,
        max_tokens=1000,
        extra_body={"reasoning": {"effort": "high"}},
    )
    sent = upstream.last
    assert sent.path == "/v1beta/models/gemini-test-1:generateContent"
    assert sent.headers["x-goog-api-key"] == upstream.api_key
    parts = sent.json["contents"][0]["parts"]
    assert [p["inlineData"]["mimeType"] for p in parts if "inlineData" in p] == ["image/png", "image/png"]
    assert sent.json["systemInstruction"] == {"parts": [{"text": "Describe images."}]}
    config = sent.json["generationConfig"]
    assert config["temperature"] == 0.2 and config["maxOutputTokens"] == 1000
    assert config["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 1024}
    message = resp.choices[0].message
    assert f"I see 2 image(s): image/png {len(PIXEL_PNG)} bytes" in message.content
    assert message.model_extra["reasoning"] == "Thinking it over."
    usage = resp.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (400, 65)
    assert usage.prompt_tokens_details.cached_tokens == 300
    assert usage.completion_tokens_details.reasoning_tokens == 25
    expected = (
        100 * Decimal("1.25") + 300 * Decimal("0.125") + 40 * Decimal("10.00") + 25 * Decimal("12.00")
    ) / M
    assert Decimal(str(usage.model_extra["cost"])) == expected
    assert from_units(gen(resp.id).cost_units) == expected


def test_gemini_image_fetch_failure_is_a_clear_400(oai, fakes, settings):
    settings.SWITCHYARD_IMAGE_FETCH_ALLOW_PRIVATE = True
    content = [
        {"type": "text", "text": "x"},
        {"type": "image_url", "image_url": {"url": fakes["gemini"].url("/images/page.html")}},
    ]
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="test/gemini", messages=[{"role": "user", "content": content}])
    assert "messages[0].content[1].image_url.url" in err.value.message and "content type" in err.value.message
    assert fakes["gemini"].requests == []


def test_gemini_refuses_private_image_urls_by_default(oai, fakes, settings):
    settings.SWITCHYARD_IMAGE_FETCH_ALLOW_PRIVATE = False
    content = [{"type": "image_url", "image_url": {"url": fakes["gemini"].url("/images/pixel.png")}}]
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="test/gemini", messages=[{"role": "user", "content": content}])
    assert "not public" in err.value.message and fakes["gemini"].image_hits == 0


def test_gemini_tools_whole_and_streamed(oai, fakes):
    upstream = fakes["gemini"]
    messages = [{"role": "user", "content": "weather in Paris?"}]
    resp = oai.chat.completions.create(
        model="test/gemini", messages=messages, tools=[WEATHER], tool_choice="auto"
    )
    decl = upstream.last.json["tools"][0]["functionDeclarations"][0]
    assert "additionalProperties" not in decl["parameters"]
    call = resp.choices[0].message.tool_calls[0]
    assert resp.choices[0].finish_reason == "tool_calls"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 7}
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'},
    ]
    resp = oai.chat.completions.create(model="test/gemini", messages=messages, tools=[WEATHER])
    assert '{"sky": "clear"}' in resp.choices[0].message.content
    assert upstream.last.json["contents"][2]["parts"][0]["functionResponse"] == {
        "name": "get_weather",
        "response": {"sky": "clear"},
    }

    stream = oai.chat.completions.create(
        model="test/gemini",
        messages=messages[:1],
        tools=[WEATHER],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert upstream.last.path.endswith(":streamGenerateContent") and upstream.last.query == {"alt": "sse"}
    args = "".join(
        tc.function.arguments or "" for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []
    )
    assert json.loads(args) == {"city": "Paris", "days": 7}
    assert chunks[-1].usage.prompt_tokens > 0


def test_gemini_streaming_text_and_errors(oai, fakes):
    stream = oai.chat.completions.create(
        model="test/gemini", messages=[{"role": "user", "content": "yo"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from fake-gemini. You said: yo"
    fakes["gemini"].push(GScript(kind="status", status=503))
    with pytest.raises(openai.APIStatusError) as err:
        oai.chat.completions.create(model="test/gemini", messages=[{"role": "user", "content": "yo"}])
    assert err.value.status_code == 502 and "overloaded" in err.value.message
    fakes["gemini"].push(GScript(kind="blocked"))
    resp = oai.chat.completions.create(model="test/gemini", messages=[{"role": "user", "content": "yo"}])
    assert resp.choices[0].finish_reason == "content_filter"


def test_gemini_json_mode(oai, fakes):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    resp = oai.chat.completions.create(
        model="test/gemini",
        messages=[{"role": "user", "content": "6x7?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    )
    assert json.loads(resp.choices[0].message.content) == {"answer": 7}
    assert fakes["gemini"].last.json["generationConfig"]["responseMimeType"] == "application/json"


# ---- Anthropic SDK -> /messages, routed to every wire format --------------------------------------

ALL_FORMATS = ["test/sim", "test/gpt", "test/claude", "test/gemini"]


@pytest.mark.parametrize("model", ALL_FORMATS)
def test_messages_text(claude, model):
    message = claude.messages.create(
        model=model,
        max_tokens=200,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hello"}],
    )
    assert message.type == "message" and message.role == "assistant" and message.model == model
    assert message.id.startswith("gen-")
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    record = gen(message.id)
    assert record.kind == "messages" and record.status == "success" and record.cost_units > 0
    assert record.tokens_completion == message.usage.output_tokens


@pytest.mark.parametrize("model", ALL_FORMATS)
def test_messages_streaming_tool_use(claude, model):
    tool = {
        "name": "get_weather",
        "description": "Weather",
        "input_schema": WEATHER["function"]["parameters"],
    }
    with claude.messages.stream(
        model=model,
        max_tokens=300,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[tool],
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_start" in events and "message_delta" in events
    uses = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and uses and uses[0].name == "get_weather"
    assert isinstance(uses[0].input, dict) and uses[0].input  # the JSON pieces assembled into an object
    assert final.usage.output_tokens > 0
    assert gen(final.id).streamed


@pytest.mark.parametrize("model", ["test/claude", "test/gemini", "test/sim"])
def test_messages_streaming_text(claude, model):
    with claude.messages.stream(
        model=model, max_tokens=300, messages=[{"role": "user", "content": "hello stream"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text and final.stop_reason == "end_turn"


def test_messages_thinking_and_images_to_anthropic(claude, fakes):
    upstream = fakes["anthropic"]
    upstream.push(AScript(thinking="Look closely."))
    message = claude.messages.create(
        model="test/claude",
        max_tokens=4000,
        thinking={"type": "enabled", "budget_tokens": 2000},
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/png",
                            "data": PIXEL_URI.split(",")[1],
                        },
                    },
                    {"type": "text", "text": "What is it?", "cache_control": {"type": "ephemeral"}},
                ],
            }
        ],
    )
    sent = upstream.last.json
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2000}
    assert sent["messages"][0]["content"][1]["cache_control"] == {"type": "ephemeral"}
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "Look closely." and "I see 1 image(s)" in message.content[1].text


def test_messages_tool_result_turn(claude, fakes):
    tool = {
        "name": "get_weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    message = claude.messages.create(
        model="test/gemini",
        max_tokens=100,
        tools=[tool],
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "snow"}],
            },
        ],
    )
    assert "snow" in message.content[0].text
    parts = fakes["gemini"].last.json["contents"]
    assert parts[1]["parts"][0]["functionCall"] == {"name": "get_weather", "args": {"city": "Oslo"}}
    assert parts[2]["parts"][0]["functionResponse"]["name"] == "get_weather"


def test_messages_errors_in_anthropic_shape(claude, live, secret, fakes):
    bad = anthropic.Anthropic(base_url=live.url + "/api", api_key="sk-sy-v1-nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        bad.messages.create(model="test/claude", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert err.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Invalid API key."},
    }
    with pytest.raises(anthropic.NotFoundError) as err:
        claude.messages.create(
            model="nobody/nothing", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.body["error"]["type"] == "not_found_error"
    r = httpx.post(
        f"{live.api}/messages",
        json={"model": "test/claude", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert r.status_code == 400 and r.json()["type"] == "error"
    assert r.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: is required and must be an integer",
    }
    fakes["anthropic"].push(AScript(kind="status", status=529))
    with pytest.raises(anthropic.APIStatusError) as err:
        claude.messages.create(model="test/claude", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502 and err.value.body["error"]["type"] == "api_error"
    poor = make_org(credits="0.0000001")
    broke = anthropic.Anthropic(base_url=live.url + "/api", api_key=make_key(poor)[1], max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as err:
        broke.messages.create(model="test/claude", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 402 and err.value.body["error"]["type"] == "billing_error"


def test_messages_midstream_error_event(claude, fakes):
    fakes["anthropic"].push(AScript(kind="midstream_error", error_type="api_error", message="boom"))
    with pytest.raises(anthropic.APIStatusError) as err:
        with claude.messages.stream(
            model="test/claude", max_tokens=50, messages=[{"role": "user", "content": "one two three"}]
        ) as stream:
            for _ in stream:
                pass
    assert "boom" in str(err.value)


# ---- /embeddings ---------------------------------------------------------------------------------


def test_embeddings_simulated_base64_and_float(oai):
    resp = oai.embeddings.create(model="test/sim-embed", input=["hello world", "second text"])
    assert len(resp.data) == 2 and len(resp.data[0].embedding) == 64
    tokens = count_text("hello world") + count_text("second text")
    assert resp.usage.prompt_tokens == tokens
    expected = tokens * Decimal("0.02") / M
    assert (
        Decimal(
            str(resp.model_extra["cost"] if "cost" in resp.model_extra else resp.usage.model_extra["cost"])
        )
        == expected
    )
    record = gen(resp.model_extra["id"])
    assert record.kind == "embedding" and from_units(record.cost_units) == expected
    floats = oai.embeddings.create(
        model="test/sim-embed", input="hello world", encoding_format="float", dimensions=16
    )
    assert len(floats.data[0].embedding) == 16
    again = oai.embeddings.create(model="test/sim-embed", input="hello world", dimensions=16)
    assert again.data[0].embedding == floats.data[0].embedding  # base64 decodes to the same float32 values


def test_embeddings_openai_upstream(oai, fakes):
    resp = oai.embeddings.create(
        model="test/openai-embed", input="one two three", dimensions=8, encoding_format="float"
    )
    sent = fakes["openai"].last_request
    assert sent.path == "/v1/embeddings"
    assert sent.json == {
        "model": "text-embedding-3-small",
        "input": "one two three",
        "encoding_format": "float",
        "dimensions": 8,
    }
    assert len(resp.data[0].embedding) == 8
    assert Decimal(str(resp.usage.model_extra["cost"])) == resp.usage.prompt_tokens * Decimal("0.13") / M


def test_embeddings_settled_before_the_last_byte(oai, org, fakes, monkeypatch):
    """As for completions: the hold is settled and the usage event queued before the answer ends, on
    success and on failure, so the client that has read it finds both. Handing the settlement over is
    made slow here, so an answer sent before it would be read before it, every time."""
    slow_settlements(monkeypatch)
    for _ in range(3):
        resp = oai.embeddings.with_raw_response.create(model="test/openai-embed", input="hello")
        flush_usage()  # no polling: whatever was queued before the answer ended is now in the database
        assert Generation.objects.filter(pk=resp.headers["x-generation-id"], status="success").exists()
        assert open_holds(org.pk) == 0
        fakes["openai"].push("fail_400")  # after the hold: the provider refuses the request
        with pytest.raises(openai.BadRequestError) as info:
            oai.embeddings.create(model="test/openai-embed", input="x")
        flush_usage()
        failed = info.value.response.headers["x-generation-id"]
        assert Generation.objects.filter(pk=failed).exclude(status="success").exists()
        assert open_holds(org.pk) == 0


def test_embeddings_errors(oai, live, secret):
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model="test/sim-embed", input="")
    with pytest.raises(openai.NotFoundError):
        oai.embeddings.create(model="nobody/nothing", input="x")
    # A chat model is not an embedding model, and vice versa: the request is wrong (400), not a provider.
    with pytest.raises(openai.BadRequestError, match="does not serve embeddings"):
        oai.embeddings.create(model="test/sim", input="x")
    with pytest.raises(openai.BadRequestError, match="does not serve text generation"):
        oai.chat.completions.create(model="test/sim-embed", messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize("model", ["test/claude", "test/gemini"])
def test_a_request_no_endpoint_can_serve_is_a_400_not_a_502(oai, org, fakes, model):
    """Legacy /completions and embeddings to chat-only wire formats: the request is at fault, so 400
    naming why, nothing sent upstream and nothing charged."""
    before = {name: len(server.requests) for name, server in fakes.items() if hasattr(server, "requests")}
    with pytest.raises(openai.BadRequestError) as info:
        oai.completions.create(model=model, prompt="Say hi")
    assert info.value.status_code == 400
    assert "only serve chat" in str(info.value)
    with pytest.raises(openai.BadRequestError) as info:
        oai.embeddings.create(model=model, input="hi")
    assert "does not serve embeddings" in str(info.value)
    after = {name: len(server.requests) for name, server in fakes.items() if hasattr(server, "requests")}
    assert after == before
    flush_usage()
    org.refresh_from_db()
    assert from_units(org.balance_units) == Decimal(5)
