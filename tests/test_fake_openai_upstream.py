"""Self-tests for the fake OpenAI upstream: wire format, scripted behaviours and the control API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from aiohttp import web

from tests.fakes.base import ThreadedServer
from tests.fakes.openai_upstream import (
    Behaviour,
    FakeOpenAIUpstream,
    OpenAIUpstreamControl,
)

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-platform-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "What is the weather in Paris today?"}]}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def fake() -> Iterator[FakeOpenAIUpstream]:
    with FakeOpenAIUpstream(api_key=KEY) as server:
        yield server


@pytest.fixture
def client(fake: FakeOpenAIUpstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url("/v1"), api_key=KEY, max_retries=0, timeout=10)


def post(fake: FakeOpenAIUpstream, path: str, body: dict, **kwargs) -> httpx.Response:
    kwargs.setdefault("timeout", 10)
    return httpx.post(fake.url(path), json=body, headers=AUTH, **kwargs)


def sse_payloads(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, asserting OpenAI's `data: ...\\n\\n` framing."""
    assert text.endswith("\n\n")
    events = text.split("\n\n")[:-1]
    assert all(event.startswith("data: ") for event in events), events
    return [event[len("data: ") :] for event in events]


# -- ThreadedServer ------------------------------------------------------------------------------------


def test_threaded_server_serves_any_app_and_restarts_on_same_port() -> None:
    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hi")

    class Hello(ThreadedServer):
        def build_app(self) -> web.Application:
            app = web.Application()
            app.router.add_get("/", hello)
            return app

    server = Hello().start()
    try:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert httpx.get(server.base_url).text == "hi"
        port = server.port
        server.stop()
        assert not server.running
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.base_url, timeout=2)
        server.start()
        assert server.port == port
        assert httpx.get(server.url("/")).text == "hi"
    finally:
        server.stop()

    app = web.Application()
    app.router.add_get("/", hello)
    with ThreadedServer(app) as plain:
        assert httpx.get(plain.base_url).text == "hi"


# -- chat completions ----------------------------------------------------------------------------------


def test_chat_completion_shape_and_deterministic_tokens(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "one two three four five six seven eight nine ten"},
        ],
    )
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.refusal is None
    assert (
        choice.message.content == "Hello from fake-openai. You said: one two three four five six seven eight"
    )
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == (2 + 3) + (10 + 3)
    assert usage.completion_tokens == 13
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details and usage.completion_tokens_details.reasoning_tokens == 0


def test_chat_content_parts_are_counted(fake: FakeOpenAIUpstream) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a b c"}]}]}
    data = post(fake, "/v1/chat/completions", body).json()
    assert data["usage"]["prompt_tokens"] == 6
    assert data["choices"][0]["message"]["content"].endswith("You said: a b c")


def test_chat_stream_with_usage_via_sdk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from fake-openai. You said: What is the weather in Paris today?"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(text.split())
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4o" for c in chunks)
    assert len({c.id for c in chunks}) == 1


def test_chat_stream_wire_format_without_usage(fake: FakeOpenAIUpstream) -> None:
    response = post(fake, "/v1/chat/completions", {**CHAT, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    words = "Hello from fake-openai. You said: What is the weather in Paris today?".split()
    # role chunk + one per word + finish chunk, and no usage chunk since include_usage was not asked.
    assert len(chunks) == 1 + len(words) + 1
    assert [c["choices"][0]["delta"].get("content", "").strip() for c in chunks[1:-1]] == words
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert all("usage" not in c for c in chunks)


def test_max_tokens_truncates_with_length_finish(client: openai.OpenAI, fake: FakeOpenAIUpstream) -> None:
    completion = client.chat.completions.create(**CHAT, max_tokens=3)
    assert completion.choices[0].message.content == "Hello from fake-openai."
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage and completion.usage.completion_tokens == 3

    data = post(fake, "/v1/chat/completions", {**CHAT, "max_completion_tokens": 2, "stream": True}).text
    chunks = [json.loads(p) for p in sse_payloads(data)[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert len(chunks) == 1 + 2 + 1


def test_tool_call_non_streaming(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(**CHAT, tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.id.startswith("call_")
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}


def test_tool_call_streaming_is_fragmented_like_openai(
    fake: FakeOpenAIUpstream, client: openai.OpenAI
) -> None:
    chunks = [
        json.loads(p)
        for p in sse_payloads(
            post(fake, "/v1/chat/completions", {**CHAT, "tools": TOOLS, "stream": True}).text
        )[:-1]
    ]
    first = chunks[0]["choices"][0]["delta"]
    assert first["role"] == "assistant" and first["content"] is None
    assert first["tool_calls"][0]["index"] == 0
    assert first["tool_calls"][0]["id"].startswith("call_")
    assert first["tool_calls"][0]["type"] == "function"
    assert first["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": ""}
    fragments = [c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[1:-1]]
    assert len(fragments) > 2
    assert "".join(fragments) == '{"location": "Paris"}'
    assert all(set(c["choices"][0]["delta"]["tool_calls"][0]) == {"index", "function"} for c in chunks[1:-1])
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    # The SDK's stream helper reassembles it.
    with client.chat.completions.stream(**CHAT, tools=TOOLS) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.arguments == '{"location": "Paris"}'


def test_tool_choice_selection(client: openai.OpenAI, fake: FakeOpenAIUpstream) -> None:
    assert (
        client.chat.completions.create(**CHAT, tools=TOOLS, tool_choice="none").choices[0].message.tool_calls
        is None
    )
    two_tools = [
        *TOOLS,
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
    ]
    named = client.chat.completions.create(
        **CHAT, tools=two_tools, tool_choice={"type": "function", "function": {"name": "lookup"}}
    )
    assert named.choices[0].message.tool_calls[0].function.name == "lookup"
    fake.push(Behaviour(tool_call=True, tool_arguments='{"city": "Oslo"}'))
    forced = client.chat.completions.create(**CHAT)
    assert forced.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert forced.choices[0].message.tool_calls[0].function.arguments == '{"city": "Oslo"}'
    fake.push(Behaviour(tool_call=False))
    assert client.chat.completions.create(**CHAT, tools=TOOLS).choices[0].finish_reason == "stop"


def test_json_modes(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(**CHAT, response_format={"type": "json_object"})
    assert json.loads(completion.choices[0].message.content or "") == {"answer": "42"}
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "temp": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["city", "temp", "tags"],
    }
    completion = client.chat.completions.create(
        **CHAT,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "w", "schema": schema, "strict": True},
        },
    )
    assert json.loads(completion.choices[0].message.content or "") == {
        "city": "42",
        "temp": 42,
        "tags": ["42"],
    }


# -- completions, embeddings, models -------------------------------------------------------------------


def test_legacy_completions(client: openai.OpenAI, fake: FakeOpenAIUpstream) -> None:
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say this is a test")
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "Hello from fake-openai. You said: Say this is a test"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage and (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        5,
        10,
    )

    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Say hi",
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=4,
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello from fake-openai. You"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage and chunks[-1].usage.completion_tokens == 4
    raw = post(fake, "/v1/completions", {"model": "m", "prompt": "x", "stream": True}).text
    assert sse_payloads(raw)[-1] == "[DONE]"


def test_embeddings_deterministic_float_and_base64(client: openai.OpenAI, fake: FakeOpenAIUpstream) -> None:
    # The SDK asks for base64 by default and decodes it.
    result = client.embeddings.create(model="text-embedding-3-small", input=["hello world", "bye"])
    assert result.object == "list" and result.model == "text-embedding-3-small"
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in result.data)
    assert result.usage.prompt_tokens == 3 and result.usage.total_tokens == 3

    data = post(fake, "/v1/embeddings", {"model": "e", "input": "hello world"}).json()
    floats = data["data"][0]["embedding"]
    assert data["data"][0]["object"] == "embedding"
    assert (
        floats
        == post(fake, "/v1/embeddings", {"model": "e", "input": "hello world"}).json()["data"][0]["embedding"]
    )
    assert floats == pytest.approx(result.data[0].embedding, abs=1e-6)
    assert floats != pytest.approx(result.data[1].embedding, abs=1e-6)
    assert sum(x * x for x in floats) == pytest.approx(1, abs=1e-4)
    assert len(client.embeddings.create(model="e", input="x", dimensions=16).data[0].embedding) == 16


def test_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o" in ids and "text-embedding-3-small" in ids
    assert client.models.retrieve("gpt-4o").owned_by == "fake-openai"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


# -- auth, validation, recording -----------------------------------------------------------------------


def test_auth(fake: FakeOpenAIUpstream) -> None:
    missing = httpx.post(fake.url("/v1/chat/completions"), json=CHAT)
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "invalid_request_error"

    wrong = httpx.post(
        fake.url("/v1/chat/completions"), json=CHAT, headers={"Authorization": "Bearer sk-other"}
    )
    assert wrong.status_code == 401
    assert wrong.json() == {
        "error": {
            "message": "Incorrect API key provided",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=fake.url("/v1"), api_key="sk-other", max_retries=0).models.list()

    # Rejected requests don't consume scripted behaviours.
    fake.push("fail_500")
    assert fake.pending == [Behaviour("status", status=500)]

    # Without an api_key any bearer token is accepted.
    with FakeOpenAIUpstream() as anything:
        assert (
            httpx.post(
                anything.url("/v1/chat/completions"), json=CHAT, headers={"Authorization": "Bearer x"}
            ).status_code
            == 200
        )


def test_requests_are_recorded(client: openai.OpenAI, fake: FakeOpenAIUpstream) -> None:
    client.chat.completions.create(**CHAT)
    client.embeddings.create(model="e", input="hi")
    recorded = fake.requests
    assert [(r.method, r.path) for r in recorded] == [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/embeddings"),
    ]
    assert recorded[0].headers["authorization"] == f"Bearer {KEY}"
    assert recorded[0].authorization == f"Bearer {KEY}"
    assert recorded[0].json["messages"] == CHAT["messages"]
    assert recorded[0].model == "gpt-4o"
    assert recorded[0].behaviour == "ok"
    assert fake.last_request.path == "/v1/embeddings"
    fake.clear_requests()
    assert fake.requests == []


def test_validation_errors_and_unknown_routes(fake: FakeOpenAIUpstream) -> None:
    bad_json = httpx.post(fake.url("/v1/chat/completions"), content=b"{nope", headers=AUTH)
    assert bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "invalid_request_error"
    missing = post(fake, "/v1/chat/completions", {"model": "m"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "messages"
    no_model = post(fake, "/v1/chat/completions", {"messages": CHAT["messages"]})
    assert no_model.status_code == 400
    unknown = post(fake, "/v1/nothing", {})
    assert unknown.status_code == 404 and "Invalid URL" in unknown.json()["error"]["message"]


# -- scripted behaviours -------------------------------------------------------------------------------


def test_fifo_then_default(client: openai.OpenAI, fake: FakeOpenAIUpstream) -> None:
    fake.push(Behaviour(content="first"), Behaviour(content="second"))
    fake.push("fail_503", times=2)
    assert client.chat.completions.create(**CHAT).choices[0].message.content == "first"
    assert client.chat.completions.create(**CHAT).choices[0].message.content == "second"
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(**CHAT)
    assert client.chat.completions.create(**CHAT).choices[0].message.content.startswith("Hello")
    fake.set_default(Behaviour(content="always"))
    assert client.completions.create(model="m", prompt="x").choices[0].text == "always"
    fake.reset()
    assert client.chat.completions.create(**CHAT).choices[0].message.content.startswith("Hello")
    assert len(fake.requests) == 1


def test_model_suffix_selects_behaviour_without_consuming_queue(fake: FakeOpenAIUpstream) -> None:
    fake.push(Behaviour(content="queued"))
    failed = post(fake, "/v1/chat/completions", {**CHAT, "model": "fake-model@fail_500"})
    assert failed.status_code == 500
    assert failed.json()["error"]["type"] == "server_error"
    limited = post(
        fake, "/v1/chat/completions", {**CHAT, "model": "fake-model@status:status=429,retry_after=7"}
    )
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    ok = post(fake, "/v1/chat/completions", {**CHAT, "model": "fake-model@ok:content=hi there"}).json()
    assert ok["choices"][0]["message"]["content"] == "hi there"
    assert ok["model"] == "fake-model"
    assert post(fake, "/v1/chat/completions", CHAT).json()["choices"][0]["message"]["content"] == "queued"
    bad = post(fake, "/v1/chat/completions", {**CHAT, "model": "fake-model@explode"})
    assert bad.status_code == 400 and "explode" in bad.json()["error"]["message"]


def test_status_behaviour(client: openai.OpenAI, fake: FakeOpenAIUpstream) -> None:
    fake.push(Behaviour("status", status=429, retry_after=3))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(**CHAT)
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.body == {
        "message": "Rate limit reached for requests",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    fake.push(
        Behaviour("status", status=400, message="bad thing", error_type="invalid_request_error", code="x")
    )
    response = post(fake, "/v1/chat/completions", {**CHAT, "stream": True})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "bad thing",
        "type": "invalid_request_error",
        "param": None,
        "code": "x",
    }


def test_usage_overrides(fake: FakeOpenAIUpstream) -> None:
    fake.push(Behaviour(usage=None))
    assert "usage" not in post(fake, "/v1/chat/completions", CHAT).json()
    fake.push(Behaviour(usage=None))
    stream = post(
        fake, "/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    ).text
    chunks = [json.loads(p) for p in sse_payloads(stream)[:-1]]
    assert all(c["choices"] for c in chunks) and all(c["usage"] is None for c in chunks)
    custom = {"prompt_tokens": 1000, "completion_tokens": 5, "total_tokens": 1005}
    fake.push(Behaviour(usage=custom))
    assert post(fake, "/v1/chat/completions", CHAT).json()["usage"] == custom
    fake.push(Behaviour(cached_tokens=4, reasoning_tokens=10))
    usage = post(fake, "/v1/chat/completions", CHAT).json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 4
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 10
    assert usage["completion_tokens"] == 12 + 10


def test_latency_and_chunk_delay(fake: FakeOpenAIUpstream) -> None:
    fake.push(Behaviour(latency_ms=300))
    started = time.monotonic()
    post(fake, "/v1/chat/completions", CHAT)
    assert time.monotonic() - started >= 0.3

    fake.push(Behaviour(chunk_delay_ms=100, content="a b c"))
    arrivals = []
    with httpx.stream(
        "POST", fake.url("/v1/chat/completions"), json={**CHAT, "stream": True}, headers=AUTH
    ) as response:
        started = time.monotonic()
        for line in response.iter_lines():
            if line:
                arrivals.append(time.monotonic() - started)
    # role, 3 words, finish, [DONE] → 5 gaps of 100 ms
    assert len(arrivals) == 6
    assert arrivals[-1] >= 0.45


def test_hang_never_answers_and_server_still_stops_fast() -> None:
    fake = FakeOpenAIUpstream().start()
    fake.push("hang")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            fake.url("/v1/chat/completions"), json=CHAT, headers={"Authorization": "Bearer x"}, timeout=0.5
        )
    assert fake.last_request.behaviour == "hang"
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 1.5


def test_hang_after_headers(fake: FakeOpenAIUpstream) -> None:
    fake.push("hang_after_headers")
    timeout = httpx.Timeout(5, read=0.5)
    with httpx.stream(
        "POST", fake.url("/v1/chat/completions"), json={**CHAT, "stream": True}, headers=AUTH, timeout=timeout
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        with pytest.raises(httpx.ReadTimeout):
            response.read()
    fake.push("hang_after_headers")
    with httpx.stream(
        "POST", fake.url("/v1/chat/completions"), json=CHAT, headers=AUTH, timeout=timeout
    ) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            response.read()


def test_drip_sends_valid_stream_byte_by_byte(fake: FakeOpenAIUpstream) -> None:
    fake.push(Behaviour("drip", interval_ms=1, content="hi"))
    pieces = []
    with httpx.stream(
        "POST", fake.url("/v1/chat/completions"), json={**CHAT, "stream": True}, headers=AUTH
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for piece in response.iter_raw():
            pieces.append(piece)
    body = b"".join(pieces).decode()
    assert len(pieces) > 50  # arrived in many small reads, not one
    payloads = sse_payloads(body)
    assert payloads[-1] == "[DONE]"
    assert "".join(json.loads(p)["choices"][0]["delta"].get("content", "") for p in payloads[:-1]) == "hi"

    fake.push(Behaviour("drip", interval_ms=1))
    assert post(fake, "/v1/embeddings", {"model": "e", "input": "x"}).json()["object"] == "list"


def test_malformed(fake: FakeOpenAIUpstream, client: openai.OpenAI) -> None:
    fake.push("malformed")
    response = post(fake, "/v1/chat/completions", CHAT)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.text == '{"choices": ['
    with pytest.raises(json.JSONDecodeError):
        response.json()
    fake.push("malformed")
    stream = post(fake, "/v1/chat/completions", {**CHAT, "stream": True})
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert "data: {not json\n\n" in stream.text


def test_drop(fake: FakeOpenAIUpstream, client: openai.OpenAI) -> None:
    fake.push("drop")
    with pytest.raises(httpx.RemoteProtocolError):
        post(fake, "/v1/chat/completions", CHAT)
    fake.push("drop")
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(**CHAT)
    # The server keeps serving afterwards.
    assert post(fake, "/v1/chat/completions", CHAT).status_code == 200


def test_drop_mid_stream(fake: FakeOpenAIUpstream, client: openai.OpenAI) -> None:
    fake.push(Behaviour("drop_mid_stream", after_chunks=3))
    received = []
    with httpx.stream(
        "POST", fake.url("/v1/chat/completions"), json={**CHAT, "stream": True}, headers=AUTH
    ) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            for line in response.iter_lines():
                if line:
                    received.append(line)
    assert len(received) == 3
    assert all(line != "data: [DONE]" for line in received)

    fake.push(Behaviour("drop_mid_stream", after_chunks=2))
    with pytest.raises(openai.APIConnectionError):
        list(client.chat.completions.create(**CHAT, stream=True))

    fake.push("drop_mid_stream")
    with pytest.raises(httpx.RemoteProtocolError):
        post(fake, "/v1/chat/completions", CHAT)


def test_garbage(fake: FakeOpenAIUpstream) -> None:
    fake.push(Behaviour("garbage", size=64))
    response = post(fake, "/v1/chat/completions", CHAT)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert len(response.content) == 64
    fake.push("garbage_raw")
    with pytest.raises(httpx.RemoteProtocolError):
        post(fake, "/v1/chat/completions", CHAT)


def test_behaviour_parse() -> None:
    assert Behaviour.parse("fail_502") == Behaviour("status", status=502)
    assert Behaviour.parse("drip:interval_ms=5") == Behaviour("drip", interval_ms=5)
    assert Behaviour.parse("ok:usage=null,tool_call=true") == Behaviour("ok", usage=None, tool_call=True)
    assert Behaviour.parse("tool_call") == Behaviour(tool_call=True)
    with pytest.raises(ValueError):
        Behaviour.parse("nope")
    with pytest.raises(ValueError):
        Behaviour.from_dict({"kind": "ok", "colour": "red"})


# -- HTTP control API and standalone process -----------------------------------------------------------


def test_http_control_api(fake: FakeOpenAIUpstream) -> None:
    assert httpx.post(
        fake.url("/_control/push"), json={"kind": "status", "status": 502, "times": 2}
    ).json() == {"queued": 2}
    assert httpx.post(fake.url("/_control/push"), json=[{"kind": "ok", "content": "x"}]).json() == {
        "queued": 3
    }
    assert httpx.post(fake.url("/_control/push"), json={"kind": "bogus"}).status_code == 400
    assert (
        httpx.post(fake.url("/_control/default"), json={"kind": "ok", "content": "dflt"}).status_code == 200
    )
    assert [post(fake, "/v1/chat/completions", CHAT).status_code for _ in range(2)] == [502, 502]
    assert post(fake, "/v1/chat/completions", CHAT).json()["choices"][0]["message"]["content"] == "x"
    assert post(fake, "/v1/chat/completions", CHAT).json()["choices"][0]["message"]["content"] == "dflt"
    recorded = httpx.get(fake.url("/_control/requests")).json()
    assert len(recorded) == 4
    assert recorded[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert recorded[0]["json"]["model"] == "gpt-4o"
    assert [r["behaviour"] for r in recorded] == ["status", "status", "ok", "ok"]
    assert httpx.post(fake.url("/_control/reset")).json() == {"ok": True}
    assert httpx.get(fake.url("/_control/requests")).json() == []
    assert fake.default == Behaviour()


def test_standalone_process() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_upstream", "--port", "0", "--api-key", KEY],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line
        base_url = line.split()[-1]
        control = OpenAIUpstreamControl(base_url)
        control.push("fail_429", Behaviour(content="remote"))
        client = openai.OpenAI(base_url=base_url + "/v1", api_key=KEY, max_retries=0)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(**CHAT)
        assert client.chat.completions.create(**CHAT).choices[0].message.content == "remote"
        requests = control.requests()
        assert [r.behaviour for r in requests] == ["status", "ok"]
        assert requests[0].authorization == f"Bearer {KEY}"
        control.reset()
        assert control.requests() == []
        # A hanging request must not keep the process alive on SIGTERM.
        control.push("hang")
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(base_url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=0.3)
        proc.terminate()
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
