"""Golden translations between the internal (OpenAI) format and Gemini's generateContent, and image fetching."""

from __future__ import annotations

import orjson
import pytest

from routing.adapters.base import UpstreamFailure, Usage
from routing.adapters.gemini import GeminiStream, build_body, parse_generate
from routing.gateway import images
from routing.request import completion_request

ALL = frozenset()


def chat(**extra):
    cache_control = extra.pop("_cache_control", True)
    fields = {"stream": False, "max_tokens": None, **extra}
    return completion_request(fields, kind="chat", models=["x/y"], cache_control=cache_control)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#",
            },
        },
    }
]


def test_request_golden():
    req = chat(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "And this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 18}'},
            {"role": "tool", "tool_call_id": "call_1", "content": "plain text"},
        ],
        tools=TOOLS,
        tool_choice="required",
        temperature=0.4,
        top_p=0.9,
        top_k=40,
        seed=3,
        stop="END",
        max_tokens=256,
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object", "additionalProperties": False, "properties": {"t": {"type": "number"}}}}},
        reasoning={"effort": "low"},
    )  # fmt: skip
    body = build_body(req, supported=ALL, images={"https://example.com/cat.jpg": ("image/jpeg", "BBBB")})
    assert body == {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "Hi"},
                    {"text": "And this?"},
                    {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                    {"inlineData": {"mimeType": "image/jpeg", "data": "BBBB"}},
                ],
            },
            {
                "role": "model",
                "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp": 18}}},
                    {"functionResponse": {"name": "get_weather", "response": {"content": "plain text"}}},
                ],
            },
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {
            "temperature": 0.4,
            "topP": 0.9,
            "topK": 40,
            "seed": 3,
            "maxOutputTokens": 256,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
            "responseSchema": {"type": "object", "properties": {"t": {"type": "number"}}},
            "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 1024},
        },
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "description": "Weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                    }
                ]
            }
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
    }


def test_tool_choice_and_capabilities():
    req = chat(
        messages=[{"role": "user", "content": "q"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        seed=1,
        temperature=0.1,
    )
    body = build_body(req, supported=frozenset({"tools", "tool_choice", "temperature"}))
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }
    assert body["generationConfig"] == {"temperature": 0.1}  # seed unsupported: dropped
    req = chat(messages=[{"role": "user", "content": "q"}], tools=TOOLS, tool_choice="none")
    assert build_body(req, supported=ALL)["toolConfig"] == {"functionCallingConfig": {"mode": "NONE"}}


def test_unfetched_url_is_refused():
    req = chat(
        messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
        ]
    )
    with pytest.raises(UpstreamFailure) as err:
        build_body(req, supported=ALL)
    assert err.value.status == 400


def test_response_golden():
    data = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Pondering.", "thought": True},
                        {"text": "Calling."},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 100,
            "cachedContentTokenCount": 60,
            "candidatesTokenCount": 20,
            "thoughtsTokenCount": 15,
            "totalTokenCount": 135,
        },
    }
    completion = parse_generate(data)
    choice = completion.choices[0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] == "Calling." and message["reasoning"] == "Pondering."
    call = message["tool_calls"][0]
    assert call["id"].startswith("call_") and call["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Oslo"}',
    }
    assert completion.usage == Usage(
        prompt_tokens=100, completion_tokens=35, cached_tokens=60, reasoning_tokens=15
    )


@pytest.mark.parametrize(
    ("native", "finish"),
    [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
     ("BLOCKLIST", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter")],
)  # fmt: skip
def test_finish_reasons(native, finish):
    data = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": native}]}
    assert parse_generate(data).choices[0]["finish_reason"] == finish


def test_blocked_prompt_is_content_filter():
    completion = parse_generate({"promptFeedback": {"blockReason": "SAFETY"}})
    assert completion.choices[0]["finish_reason"] == "content_filter"
    assert completion.choices[0]["message"]["content"] is None


def test_stream_golden():
    chunks = [
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hmm", "thought": True}]}}]},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}}]},
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}],
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 4, "thoughtsTokenCount": 2},
        },
    ]
    translator = GeminiStream()
    out = []
    for chunk in chunks:
        out.extend(translator.feed_line(b"data: " + orjson.dumps(chunk) + b"\r\n"))
        out.extend(translator.feed_line(b"\r\n"))
    assert translator.done

    def delta(d, finish=None):
        return {"choices": [{"index": 0, "delta": d, "finish_reason": finish}]}

    call = out[4]["choices"][0]["delta"]["tool_calls"][0]
    assert out == [
        delta({"role": "assistant", "content": ""}),
        delta({"reasoning": "Hmm"}),
        delta({"content": "Hel"}),
        delta({"content": "lo"}),
        delta(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a":1}'},
                    }
                ]
            }
        ),
        delta({}, "tool_calls"),
        Usage(prompt_tokens=5, completion_tokens=6, reasoning_tokens=2),
    ]


def test_stream_error_payload_raises():
    translator = GeminiStream()
    translator.feed_line(b'data: {"error": {"code": 503, "message": "overloaded"}}\n')
    with pytest.raises(UpstreamFailure):
        translator.feed_line(b"\n")


# ---- image fetching safety -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),
        ("0.0.0.0", False),
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
    ],
)
def test_address_allowed(address, ok):
    assert images.address_allowed(address) is ok


async def test_default_refuses_loopback(settings):
    settings.SWITCHYARD_IMAGE_FETCH_ALLOW_PRIVATE = False
    with pytest.raises(images.ImageFetchError, match="not public"):
        await images.fetch_image("http://127.0.0.1:9/x.png")
    with pytest.raises(images.ImageFetchError, match="non-public"):
        await images.fetch_image("http://localhost:9/x.png")


async def test_fetch_limits(settings):
    from tests.fakes.gemini_upstream import PIXEL_PNG, FakeGeminiUpstream

    with FakeGeminiUpstream() as server:
        settings.SWITCHYARD_IMAGE_FETCH_ALLOW_PRIVATE = True
        ctype, data = await images.fetch_image(server.url("/images/pixel.png"))
        assert ctype == "image/png" and data and len(PIXEL_PNG) > 0
        ctype, _ = await images.fetch_image(server.url("/images/redirect"))
        assert ctype == "image/png"
        with pytest.raises(images.ImageFetchError, match="content type"):
            await images.fetch_image(server.url("/images/page.html"))
        with pytest.raises(images.ImageFetchError, match="HTTP 404"):
            await images.fetch_image(server.url("/images/missing.png"))
        req = dict(  # images.inline_images reads the messages of a plain dict
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": server.url("/images/page.html")}}],
                }
            ]
        )
        with pytest.raises(images.ImageFetchError, match=r"^messages\[0\]\.content\[0\]\.image_url\.url"):
            await images.inline_images(req)
        # With the setting back at its default, even the redirect's first hop (127.0.0.1) is refused.
        settings.SWITCHYARD_IMAGE_FETCH_ALLOW_PRIVATE = False
        with pytest.raises(images.ImageFetchError):
            await images.fetch_image(server.url("/images/redirect"))
