"""Golden translations between the internal (OpenAI) format and Anthropic's Messages format, both ways."""

from __future__ import annotations

import orjson
import pytest

from routing.adapters.anthropic import AnthropicStream, build_body, parse_message, thinking_budget
from routing.adapters.base import UpstreamFailure, Usage
from routing.gateway.messages import content_blocks, stop_reason, usage_json
from routing.gateway.messages_request import to_internal
from routing.request import completion_request

ALL = frozenset()
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def chat(**extra):
    cache_control = extra.pop("_cache_control", True)
    fields = {"stream": False, "max_tokens": None, **extra}
    return completion_request(fields, kind="chat", models=["x/y"], cache_control=cache_control)


def test_request_golden():
    req = chat(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use metric units."},
            {"role": "user", "content": "Hi"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "user", "content": "Thanks"},
        ],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        stop=["END"],
        temperature=0.5,
        seed=7,  # Anthropic has no seed: dropped
        user="u-1",
    )
    body = build_body(req, model="claude-x", supported=ALL, max_default=8192)
    assert body == {
        "model": "claude-x",
        "max_tokens": 8192,
        "system": "Be brief.\n\nUse metric units.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hi"},
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                    {"type": "text", "text": "Thanks"},
                ],
            },
        ],
        "temperature": 0.5,
        "stop_sequences": ["END"],
        "tools": [
            {
                "name": "get_weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                "description": "Weather for a city",
            }
        ],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "u-1"},
    }


def test_cache_control_and_defaults():
    req = chat(
        messages=[
            {
                "role": "system",
                "content": [{"type": "text", "text": "Long context", "cache_control": {"type": "ephemeral"}}],
            },
            {"role": "user", "content": "q"},
        ]
    )
    body = build_body(req, model="m", supported=ALL, max_default=None)
    assert body["max_tokens"] == 4096
    assert body["system"] == [
        {"type": "text", "text": "Long context", "cache_control": {"type": "ephemeral"}}
    ]


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"})],
)
def test_tool_choice(tool_choice, expected):
    req = chat(messages=[{"role": "user", "content": "q"}], tools=TOOLS, tool_choice=tool_choice)
    assert build_body(req, model="m", supported=ALL, max_default=100)["tool_choice"] == expected


def test_unsupported_parameters_are_dropped():
    req = chat(messages=[{"role": "user", "content": "q"}], temperature=0.2, top_k=5, stop="x", tools=TOOLS)
    body = build_body(req, model="m", supported=frozenset({"max_tokens", "top_k"}), max_default=100)
    assert "temperature" not in body and "stop_sequences" not in body and "tools" not in body
    assert body["top_k"] == 5


def test_reasoning_to_thinking():
    assert thinking_budget({"effort": "high"}, 10000) == 8000
    assert thinking_budget({"effort": "low"}, 10000) == 2000
    assert thinking_budget({"effort": "low"}, 2000) == 1024  # never below Anthropic's minimum
    assert thinking_budget({"max_tokens": 3000}, 10000) == 3000
    assert thinking_budget({"enabled": False}, 10000) is None
    req = chat(
        messages=[{"role": "user", "content": "q"}],
        reasoning={"effort": "medium"},
        max_tokens=10000,
        temperature=1,
    )
    body = build_body(
        req, model="m", supported=frozenset({"max_tokens", "reasoning", "temperature"}), max_default=None
    )
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 5000}
    assert "temperature" not in body  # incompatible with thinking upstream
    body = build_body(req, model="m", supported=frozenset({"max_tokens"}), max_default=None)
    assert "thinking" not in body


@pytest.mark.parametrize(("max_tokens", "thinking"), [(800, None), (1024, None), (1500, 1024), (4000, 2000)])
def test_thinking_budget_fits_inside_max_tokens(max_tokens, thinking):
    """Anthropic needs 1024 <= budget_tokens < max_tokens: too little room means no thinking, not a 400."""
    req = chat(
        messages=[{"role": "user", "content": "q"}], reasoning={"effort": "medium"}, max_tokens=max_tokens
    )
    body = build_body(req, model="m", supported=frozenset({"max_tokens", "reasoning"}), max_default=None)
    assert body["max_tokens"] == max_tokens
    if thinking is None:
        assert "thinking" not in body
    else:
        assert body["thinking"] == {"type": "enabled", "budget_tokens": thinking}
        assert 1024 <= body["thinking"]["budget_tokens"] < max_tokens


def test_response_golden():
    data = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Hmm, weather.", "signature": "s"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "usage": {
            "input_tokens": 10,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20,
            "output_tokens": 30,
        },
    }
    completion = parse_message(data)
    assert completion.choices == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Checking.",
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
                "reasoning": "Hmm, weather.",
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ]
    assert completion.usage == Usage(
        prompt_tokens=130, completion_tokens=30, cached_tokens=100, cache_write_tokens=20, reasoning_tokens=4
    )
    assert parse_message(data, exclude_reasoning=True).choices[0]["message"].get("reasoning") is None


@pytest.mark.parametrize(
    ("native", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons(native, finish):
    data = {"content": [{"type": "text", "text": "x"}], "stop_reason": native, "usage": {"input_tokens": 1}}
    assert parse_message(data).choices[0]["finish_reason"] == finish


def sse(*events):
    lines = []
    for name, data in events:
        lines += [f"event: {name}\n".encode(), b"data: " + orjson.dumps(data) + b"\n", b"\n"]
    return lines


def feed(translator, lines):
    out = []
    for line in lines:
        out.extend(translator.feed_line(line))
    return out


def test_stream_golden():
    events = sse(
        ("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 12, "cache_read_input_tokens": 8, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me see."}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "x"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("ping", {"type": "ping"}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"a":'}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 2}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 25}}),
        ("message_stop", {"type": "message_stop"}),
    )  # fmt: skip
    translator = AnthropicStream()
    out = feed(translator, events)
    assert translator.done

    def delta(d, finish=None):
        return {"choices": [{"index": 0, "delta": d, "finish_reason": finish}]}

    assert out == [
        delta({"role": "assistant", "content": ""}),
        delta({"reasoning": "Let me see."}),
        delta({"content": "Hi"}),
        delta(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "toolu_9",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    }
                ]
            }
        ),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        delta({}, "tool_calls"),
        Usage(prompt_tokens=20, completion_tokens=25, cached_tokens=8, reasoning_tokens=4),
    ]


def test_stream_error_event_is_a_retriable_failure():
    translator = AnthropicStream()
    lines = sse(
        ("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 1}}}),
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )
    with pytest.raises(UpstreamFailure) as err:
        feed(translator, lines)
    assert err.value.retriable and "Overloaded" in err.value.message


# ---- the /messages front door: Anthropic request in, internal request out, and back ----------------


def test_messages_request_to_internal():
    body = {
        "model": "anthropic/claude-sonnet-4.5",
        "max_tokens": 512,
        "system": [{"type": "text", "text": "Sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "t", "signature": "s"},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "ok"}],
                    },
                    {"type": "text", "text": "go on"},
                ],
            },
        ],
        "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["\n\nHuman:"],
        "temperature": 0.3,
        "metadata": {"user_id": "abc"},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "stream": True,
    }
    assert to_internal(body) == {
        "model": "anthropic/claude-sonnet-4.5",
        "max_tokens": 512,
        "messages": [
            {
                "role": "system",
                "content": [{"type": "text", "text": "Sys", "cache_control": {"type": "ephemeral"}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "ok"},
            {"role": "user", "content": "go on"},
        ],
        "temperature": 0.3,
        "stream": True,
        "stop": ["\n\nHuman:"],
        "tools": [
            {
                "type": "function",
                "function": {"name": "f", "parameters": {"type": "object"}, "description": "d"},
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "user": "abc",
        "reasoning": {"max_tokens": 2048},
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages[0].content[0].type"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search_20250305", "name": "w"}]}, "tools[0].type"),
    ],
)  # fmt: skip
def test_messages_request_errors_name_the_field(body, field):
    from switchyard.errors import BadRequest

    with pytest.raises(BadRequest) as err:
        to_internal(body)
    assert err.value.message.startswith(field + ":")


def test_messages_answer_blocks_and_usage():
    message = {
        "role": "assistant",
        "content": "Sure.",
        "reasoning": "why",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 2}'}}],
    }
    assert content_blocks(message) == [
        {"type": "thinking", "thinking": "why", "signature": ""},
        {"type": "text", "text": "Sure."},
        {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 2}},
    ]
    assert stop_reason("tool_calls") == "tool_use" and stop_reason("length") == "max_tokens"
    assert stop_reason("stop", "stop_sequence") == "stop_sequence"
    usage = usage_json(
        Usage(prompt_tokens=130, completion_tokens=30, cached_tokens=100, cache_write_tokens=20), 0
    )
    assert usage["input_tokens"] == 10 and usage["cache_read_input_tokens"] == 100
    assert usage["cache_creation_input_tokens"] == 20 and usage["output_tokens"] == 30
