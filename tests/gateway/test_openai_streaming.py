"""Streaming through the live server: no failover after the first byte (an in-stream error instead),
slow and silent upstreams bounded by deadlines, keep-alive comments, and the final usage chunk."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import openai
import pytest

from routing.gateway.tokens import count_messages, count_text
from tests.fakes.openai_upstream import Behaviour
from tests.gateway.openai_env import *  # noqa: F403 - the shared fixtures
from tests.gateway.openai_env import (
    HELLO,
    KEYS,
    M,
    balance,
    body,
    expected_cost,
    generation,
    open_holds,
    route,
    sse_events,
)

pytestmark = pytest.mark.django_db(transaction=True)
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet"


def chunks_of(text: str) -> list[dict]:
    return [json.loads(e) for e in sse_events(text) if e != "[DONE]"]


def test_drop_mid_stream_ends_with_an_error_chunk_and_done_and_charges_what_was_delivered(
    live, secret, raw, upstreams, org
):
    upstreams.a.push(Behaviour(kind="drop_mid_stream", content=WORDS, after_chunks=4))
    before = balance(org)
    resp = raw.post("/chat/completions", json=body("fake-a", "fake-b", stream=True))
    assert resp.status_code == 200
    events = sse_events(resp.text)
    assert events[-1] == "[DONE]"
    chunks = chunks_of(resp.text)
    delivered = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert delivered == "alpha bravo charlie"  # role chunk + three words, then the line went dead
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "error"
    assert last["error"]["code"] == 502 and "dropped the stream" in last["error"]["message"]
    assert last["error"]["metadata"]["provider_name"] == "Fake A"
    assert not upstreams.b.requests  # no failover after the first byte

    record = generation(live, secret, resp.headers["x-generation-id"])
    assert record["status"] == "error" and record["finish_reason"] == "error"
    assert record["usage_estimated"] is True
    prompt, completion = count_messages(HELLO), count_text(delivered)
    assert (record["tokens_prompt"], record["tokens_completion"]) == (prompt, completion)
    cost = expected_cost("fake-a", prompt, completion)
    assert Decimal(str(record["total_cost"])) == cost
    assert balance(org) == before - cost
    assert open_holds(org.pk) == 0


def test_sdk_raises_on_the_in_stream_error_after_the_text_it_got(client, upstreams):
    upstreams.a.push(Behaviour(kind="drop_mid_stream", content=WORDS, after_chunks=3))
    stream = client.chat.completions.create(
        model="test/gpt", messages=HELLO, stream=True, extra_body=route("fake-a", "fake-b")
    )
    got = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "alpha bravo"
    assert "dropped the stream" in str(caught.value)


def test_silence_mid_stream_is_cut_by_the_idle_timeout(live, secret, upstreams):
    # fake-tight allows 1 s between events; the fake pauses 30 s after the first chunk.
    upstreams.a.push(Behaviour(kind="ok", content=WORDS, chunk_delay_ms=30_000))
    with httpx.Client(base_url=live.api, headers={"Authorization": f"Bearer {secret}"}, timeout=10) as http:
        resp = http.post("/chat/completions", json=body("fake-tight", "fake-b", stream=True))
    chunks = chunks_of(resp.text)
    assert sse_events(resp.text)[-1] == "[DONE]"
    assert chunks[-1]["choices"][0]["finish_reason"] == "error"
    assert "went silent for 1s" in chunks[-1]["error"]["message"]
    assert not upstreams.b.requests
    record = generation(live, secret, resp.headers["x-generation-id"])
    assert record["attempts"][0]["reason"] == "timeout"


@pytest.mark.parametrize("kind", ["drip", "hang_after_headers"])
def test_dripping_or_stalled_upstream_fails_over_before_the_first_byte(live, secret, raw, upstreams, kind):
    # One byte a second never completes an event inside fake-tight's 1 s first-byte deadline.
    upstreams.a.push(Behaviour(kind=kind, interval_ms=1000))
    resp = raw.post("/chat/completions", json=body("fake-tight", "fake-b", stream=True))
    chunks = chunks_of(resp.text)
    assert {c["provider"] for c in chunks} == {"Fake B"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    record = generation(live, secret, resp.headers["x-generation-id"])
    first = record["attempts"][0]
    assert (first["provider"], first["reason"], first["status"]) == ("fake-tight", "timeout", 408)
    assert "did not start answering within 1s" in first["error"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("kind", ["drip", "hang_after_headers"])
def test_dripping_or_stalled_upstream_alone_is_a_clean_408(raw, upstreams, org, kind, stream):
    upstreams.a.push(Behaviour(kind=kind, interval_ms=1000))
    before = balance(org)
    resp = raw.post("/chat/completions", json=body("fake-tight", stream=stream))
    assert resp.status_code == 408
    assert resp.json()["error"]["code"] == 408
    assert resp.json()["error"]["metadata"]["attempts"][0]["reason"] == "timeout"
    assert balance(org) == before


def test_processing_comments_while_waiting_and_the_sdk_ignores_them(client, raw, upstreams, settings):
    settings.SWITCHYARD_PROCESSING_COMMENT_SECONDS = Decimal("0.1")
    upstreams.a.push(Behaviour(kind="ok", latency_ms=700))
    resp = raw.post("/chat/completions", json=body("fake-a", stream=True))
    text = resp.text
    assert text.startswith(": SWITCHYARD PROCESSING\n\n")
    assert text.count(": SWITCHYARD PROCESSING") >= 2
    assert text.index(": SWITCHYARD PROCESSING") < text.index("data: ")
    assert sse_events(text)[-1] == "[DONE]"

    upstreams.a.push(Behaviour(kind="ok", latency_ms=700))
    chunks = list(
        client.chat.completions.create(
            model="test/gpt", messages=HELLO, stream=True, extra_body=route("fake-a")
        )
    )
    assert "Hello from fake-openai" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_no_processing_comments_when_the_provider_is_quick(raw, upstreams):
    resp = raw.post("/chat/completions", json=body("fake-a", stream=True))
    assert "SWITCHYARD PROCESSING" not in resp.text


@pytest.mark.parametrize(
    "ask",
    [{"stream_options": {"include_usage": True}}, {"usage": {"include": True}}],
    ids=["stream_options", "usage.include"],
)
def test_final_usage_chunk_with_exact_cost(raw, live, secret, upstreams, ask):
    usage = {
        "prompt_tokens": 1234,
        "completion_tokens": 56,
        "total_tokens": 1290,
        "prompt_tokens_details": {"cached_tokens": 1000},
    }
    upstreams.a.push(Behaviour(kind="ok", usage=usage))
    resp = raw.post("/chat/completions", json=body("fake-a", stream=True, **ask))
    chunks = chunks_of(resp.text)
    final = chunks[-1]
    assert final["choices"] == [] and all("usage" not in c for c in chunks[:-1])
    # fake-a: prompt 0.15, cache read 0.075, completion 0.60 USD per million tokens.
    cost = (234 * Decimal("0.15") + 1000 * Decimal("0.075") + 56 * Decimal("0.60")) / M
    assert final["usage"]["prompt_tokens"] == 1234 and final["usage"]["completion_tokens"] == 56
    assert final["usage"]["prompt_tokens_details"]["cached_tokens"] == 1000
    assert Decimal(resp.text.split('"cost":')[1].split(",")[0]) == cost  # the exact decimal as sent
    record = generation(live, secret, final["id"])
    assert Decimal(str(record["total_cost"])) == cost and record["usage_estimated"] is False


def test_no_usage_chunk_unless_asked(raw, upstreams):
    chunks = chunks_of(raw.post("/chat/completions", json=body("fake-a", stream=True)).text)
    assert all("usage" not in c for c in chunks)


def test_stream_usage_estimated_with_tiktoken_when_the_upstream_sends_none(raw, live, secret, upstreams):
    upstreams.a.push(Behaviour(kind="ok", content=WORDS, usage=None))
    resp = raw.post("/chat/completions", json=body("fake-a", stream=True, usage={"include": True}))
    final = chunks_of(resp.text)[-1]
    prompt, completion = count_messages(HELLO), count_text(WORDS)
    assert (final["usage"]["prompt_tokens"], final["usage"]["completion_tokens"]) == (prompt, completion)
    assert Decimal(str(final["usage"]["cost"])) == expected_cost("fake-a", prompt, completion)
    record = generation(live, secret, final["id"])
    assert record["usage_estimated"] is True and record["tokens_completion"] == completion


def test_provider_error_event_mid_stream_is_passed_on_scrubbed(raw, live, secret, upstreams, org):
    leaked = KEYS["a"]
    upstreams.a.push(
        Behaviour(kind="error_in_body", content=WORDS, after_chunks=3, message=f"server melted; key={leaked}")
    )
    resp = raw.post("/chat/completions", json=body("fake-a", "fake-b", stream=True))
    chunks = chunks_of(resp.text)
    assert sse_events(resp.text)[-1] == "[DONE]" and leaked not in resp.text
    assert chunks[-1]["choices"][0]["finish_reason"] == "error"
    assert "server melted" in chunks[-1]["error"]["message"]
    assert not upstreams.b.requests
    record = generation(live, secret, resp.headers["x-generation-id"])
    assert record["tokens_completion"] == count_text("alpha bravo") and record["total_cost"] > 0


def test_idle_timeout_setting_caps_the_catalog_value(raw, upstreams, settings):
    settings.SWITCHYARD_IDLE_TIMEOUT_SECONDS = Decimal("0.5")  # fake-a's catalog says 10 s
    upstreams.a.push(Behaviour(kind="ok", content=WORDS, chunk_delay_ms=30_000))
    chunks = chunks_of(raw.post("/chat/completions", json=body("fake-a", stream=True)).text)
    assert "went silent for 0.5s" in chunks[-1]["error"]["message"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "error"
