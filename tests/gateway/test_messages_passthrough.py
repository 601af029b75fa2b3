"""`POST /api/v1/messages` to Anthropic-format endpoints: the customer's body and the provider's answer
pass through (what translation would drop survives), usage is still billed, failover still works; and
the prompt-caching capability (`cache_control` only where an endpoint takes it)."""

# ruff: noqa: F811 - the fixtures imported from test_native_providers are test parameters here

from __future__ import annotations

import copy
from decimal import Decimal

import anthropic
import httpx
import orjson
import pytest

from switchyard.money import from_units
from tests.fakes.anthropic_upstream import Script as AScript
from tests.gateway.test_native_providers import (  # noqa: F401 - fixtures
    claude,
    fakes,
    gen,
    native_catalog,
    oai,
    org,
    secret,
)

pytestmark = pytest.mark.django_db(transaction=True)

M = Decimal(1_000_000)
SIGNED_THINKING = {"type": "thinking", "thinking": "The user wants a summary.", "signature": "EqQBCgIYAh=="}
DOCUMENT = {
    "type": "document",
    "source": {"type": "text", "media_type": "text/plain", "data": "Switchyard routes LLM requests."},
    "title": "About",
    "citations": {"enabled": True},
}
CONVERSATION = [
    {"role": "user", "content": [DOCUMENT, {"type": "text", "text": "Summarise the document."}]},
    {"role": "assistant", "content": [SIGNED_THINKING, {"type": "text", "text": "It routes requests."}]},
    {"role": "user", "content": "And in one word?"},
]


def sse_events(raw: bytes) -> list[tuple[str, bytes]]:
    """(event name, data line) of each event in a raw SSE body; comments skipped."""
    out = []
    for frame in raw.split(b"\n\n"):
        lines = [line for line in frame.split(b"\n") if line and not line.startswith(b":")]
        if not lines:
            continue
        name = next(line[7:].decode() for line in lines if line.startswith(b"event: "))
        data = b"\n".join(line[6:] for line in lines if line.startswith(b"data: "))
        out.append((name, data))
    return out


def test_passthrough_sends_what_translation_drops(claude, fakes):
    """A signed thinking block from an earlier turn, a document with citations, top-level cache_control
    and metadata reach Anthropic as sent; Switchyard's own fields do not."""
    upstream = fakes["anthropic"]
    upstream.push(AScript(input_tokens=120, cache_read=800, cache_creation=100, output_tokens=30))
    message = claude.messages.create(
        model="test/claude",
        max_tokens=3000,
        thinking={"type": "enabled", "budget_tokens": 1500},
        cache_control={"type": "ephemeral"},
        metadata={"user_id": "u-42"},
        messages=copy.deepcopy(CONVERSATION),
        extra_body={"provider": {"sort": "price"}, "models": ["test/gemini"], "service_tier": "auto"},
    )
    sent = upstream.last
    assert sent.problems == []
    assert sent.json["model"] == "claude-test-1"
    assert sent.json["messages"] == CONVERSATION  # signature, document, citations: all intact
    assert sent.json["cache_control"] == {"type": "ephemeral"}
    assert sent.json["metadata"] == {"user_id": "u-42"}
    assert sent.json["thinking"] == {"type": "enabled", "budget_tokens": 1500}
    assert not {"provider", "models", "service_tier", "stream"} & set(sent.json)

    # The provider's answer as it was (its signature too), with our id, model name and the cost.
    assert message.id.startswith("gen-") and message.model == "test/claude"
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].signature == "sig=="
    assert message.usage.cache_read_input_tokens == 800 and message.usage.cache_creation_input_tokens == 100
    assert message.usage.input_tokens == 120 and message.usage.output_tokens == 30
    expected = (
        120 * Decimal("3.00") + 800 * Decimal("0.30") + 100 * Decimal("3.75") + 30 * Decimal("15")
    ) / M
    assert Decimal(str(message.usage.model_extra["cost"])) == expected
    assert message.model_extra["provider"] == "Fake Anthropic"
    record = gen(message.id)
    assert record.kind == "messages" and record.status == "success"
    assert from_units(record.cost_units) == expected
    assert (record.tokens_prompt, record.tokens_cached, record.tokens_cache_write) == (1020, 800, 100)
    assert record.tokens_completion == 30


def test_passthrough_stream_is_the_providers_event_sequence(claude, live, secret, fakes):
    """The client sees the fake's events in the fake's order, byte for byte except the fields we own:
    message_start's id and model, and the cost in message_delta's usage."""
    upstream = fakes["anthropic"]
    upstream.push(
        AScript(input_tokens=50, cache_read=400, cache_creation=0, output_tokens=12, thinking="Hmm.")
    )
    body = {
        "model": "test/claude",
        "max_tokens": 3000,
        "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 1200},
        "messages": CONVERSATION,
    }
    headers = {"x-api-key": secret, "anthropic-version": "2023-06-01"}
    with httpx.stream("POST", f"{live.api}/messages", json=body, headers=headers, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        gen_id = r.headers["x-generation-id"]
        raw = r.read()
    events = sse_events(raw)
    sent = upstream.last
    assert sent.json["stream"] is True and sent.json["messages"] == CONVERSATION
    assert [name for name, _ in events] == sent.sent
    assert "signature_delta" in raw.decode()  # a delta the translation path does not carry
    start = orjson.loads(events[0][1])["message"]
    assert (start["id"], start["model"]) == (gen_id, "test/claude")
    assert start["usage"]["cache_read_input_tokens"] == 400
    delta = orjson.loads(next(data for name, data in events if name == "message_delta"))
    expected = (50 * Decimal("3.00") + 400 * Decimal("0.30") + 12 * Decimal("15")) / M
    assert delta["usage"]["output_tokens"] == 12 and Decimal(str(delta["usage"]["cost"])) == expected
    # Events we do not own are the provider's bytes (its JSON spacing included).
    first_delta = next(data for name, data in events if name == "content_block_delta")
    assert first_delta.startswith(b'{"type": "content_block_delta", "index": 0')
    record = gen(gen_id)
    assert record.streamed and from_units(record.cost_units) == expected
    assert (record.tokens_cached, record.tokens_completion) == (400, 12)

    # The anthropic SDK assembles the same stream, signature included.
    with claude.messages.stream(**{k: v for k, v in body.items() if k != "stream"}) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].signature == "sig=="
    assert final.id.startswith("gen-") and final.model == "test/claude"


def test_passthrough_fails_over_to_the_translation_path(claude, fakes):
    """An Anthropic endpoint failing before the first byte (a 529, or an error event right after
    message_start) moves on to the next endpoint, a simulated one, through translation."""
    upstream = fakes["anthropic"]
    prefs = {"provider": {"order": ["fake-anthropic", "simulated"]}}
    upstream.push(AScript(kind="status", status=529))
    message = claude.messages.create(
        model="test/claude-failover",
        max_tokens=100,
        messages=[{"role": "user", "content": "hi"}],
        extra_body=prefs,
    )
    assert message.model_extra["provider"] == "Switchyard Simulator" and message.content[0].text
    assert [a["provider"] for a in gen(message.id).attempts] == ["fake-anthropic", "simulated"]

    upstream.push(AScript(kind="stream_error"))
    with claude.messages.stream(
        model="test/claude-failover",
        max_tokens=100,
        messages=[{"role": "user", "content": "hi"}],
        extra_body=prefs,
    ) as stream:
        names = [event.type for event in stream]
        final = stream.get_final_message()
    assert upstream.last.sent == ["message_start", "error"]  # held back, never shown to the client
    assert names.count("message_start") == 1 and names[-1] == "message_stop"
    assert final.content[0].text and final.stop_reason == "end_turn"
    assert [a["provider"] for a in gen(final.id).attempts] == ["fake-anthropic", "simulated"]


def test_native_only_blocks_route_only_to_anthropic_endpoints(claude, fakes):
    """A document block cannot be translated: such a request skips other formats, and a model with no
    Anthropic-format endpoint answers 400 naming the block, before anything is sent or charged."""
    upstream = fakes["anthropic"]
    upstream.push(AScript(kind="status", status=529))
    with pytest.raises(anthropic.APIStatusError) as err:
        claude.messages.create(
            model="test/claude-failover",
            max_tokens=100,
            messages=CONVERSATION[:1],
            extra_body={"provider": {"order": ["fake-anthropic", "simulated"]}},
        )
    assert err.value.status_code == 502
    assert [a["provider"] for a in gen(err.value.response.headers["x-generation-id"]).attempts] == [
        "fake-anthropic"
    ]
    before = len(fakes["gemini"].requests)
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.create(model="test/gemini", max_tokens=100, messages=CONVERSATION[:1])
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert err.value.body["error"]["message"].startswith("messages[0].content[0]: a document block")
    assert len(fakes["gemini"].requests) == before


def test_cache_control_only_to_endpoints_with_explicit_caching(claude, oai, fakes):
    """test/claude-failover's Anthropic endpoint has no cache prices, so no explicit caching:
    cache_control is removed from what it is sent (pass-through and translation alike), as it is for
    an OpenAI-format endpoint; test/claude (cache prices) keeps it."""
    upstream = fakes["anthropic"]
    cached_text = {"type": "text", "text": "Long context.", "cache_control": {"type": "ephemeral"}}
    tool = {"name": "t", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}
    body = {
        "max_tokens": 100,
        "system": [cached_text],
        "tools": [tool],
        "tool_choice": {"type": "none"},
        "cache_control": {"type": "ephemeral"},
        "messages": [{"role": "user", "content": [cached_text]}],
    }
    only_anthropic = {"provider": {"order": ["fake-anthropic"], "allow_fallbacks": False}}
    claude.messages.create(model="test/claude-failover", extra_body=only_anthropic, **copy.deepcopy(body))
    sent = upstream.last.json
    assert "cache_control" not in orjson.dumps(sent).decode()
    assert sent["system"] == [{"type": "text", "text": "Long context."}]

    claude.messages.create(model="test/claude", **copy.deepcopy(body))
    sent = upstream.last.json
    assert sent["system"] == [cached_text] and sent["tools"][0]["cache_control"] == {"type": "ephemeral"}
    assert sent["cache_control"] == {"type": "ephemeral"}

    part = {"type": "text", "text": "Long context.", "cache_control": {"type": "ephemeral"}}
    oai.chat.completions.create(
        model="test/claude-failover",
        messages=[{"role": "user", "content": [part]}],
        extra_body=only_anthropic,
    )
    assert upstream.last.json["messages"][0]["content"] == [{"type": "text", "text": "Long context."}]
    oai.chat.completions.create(model="test/gpt", messages=[{"role": "user", "content": [part]}])
    assert fakes["openai"].last_request.json["messages"][0]["content"] == [
        {"type": "text", "text": "Long context."}
    ]


def test_endpoints_api_says_how_each_endpoint_caches(live, secret):
    def caching(slug: str) -> list[tuple[str, bool, bool]]:
        r = httpx.get(f"{live.api}/models/{slug}/endpoints", headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 200
        return [
            (e["tag"], e["supports_implicit_caching"], e["supports_explicit_caching"])
            for e in r.json()["data"]["endpoints"]
        ]

    assert caching("test/claude") == [("fake-anthropic", False, True)]
    assert caching("test/gemini") == [("fake-gemini", True, False)]
    assert sorted(caching("test/claude-failover")) == [
        ("fake-anthropic", False, False),
        ("simulated", False, False),
    ]
