"""Property test: random JSON shapes at `/messages` and `/chat/completions` (hypothesis, on the live server).

The schema fuzzing (test_fuzz.py) generates bodies from the OpenAPI document, so it rarely puts a list
where a block's `type` goes. Here every field the front doors read can hold any JSON value: the answer
is never a 5xx, and every error is in the front door's own shape (Anthropic's on /messages).
SWITCHYARD_FUZZ_EXAMPLES (as for `make fuzz`) raises the number of examples.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import make_key, make_org

EXAMPLES = (
    int(os.environ.get("SWITCHYARD_FUZZ_EXAMPLES", "20")) * 10
)  # 200 in `make test`: 80 missed the list `type`
MODEL = "switchyard/sim-1"
KEYS = [
    "type", "text", "role", "content", "source", "media_type", "data", "url", "id", "name", "input",
    "tool_use_id", "is_error", "cache_control", "image_url", "detail", "function", "arguments",
    "tool_calls", "tool_call_id", "parameters", "description", "input_schema", "json_schema", "schema",
    "user_id", "budget_tokens", "citations", "title", "file_id", "effort", "max_tokens",
]  # fmt: skip
WORDS = [
    "text", "image", "tool_use", "tool_result", "document", "search_result", "thinking", "image_url",
    "input_audio", "file", "user", "assistant", "system", "developer", "tool", "base64", "url", "auto",
    "any", "none", "required", "enabled", "disabled", "function", "json_schema", "json_object", MODEL,
    "toolu_1", "data:image/png;base64,AA==", "", "http://192.0.0.8/x.png",
]  # fmt: skip

leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(WORDS)
)
any_json = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    max_leaves=12,
)


def _block() -> st.SearchStrategy[Any]:
    typed = st.fixed_dictionaries(
        {"type": st.sampled_from(WORDS) | any_json},
        optional={k: any_json for k in KEYS if k != "type"},
    )
    return typed | any_json


def _content() -> st.SearchStrategy[Any]:
    return st.text(max_size=20) | st.lists(_block(), min_size=1, max_size=3) | any_json


def _message() -> st.SearchStrategy[Any]:
    return (
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["user", "assistant", "system", "tool"]) | any_json,
                "content": _content(),
            },
            optional={"tool_calls": any_json, "tool_call_id": any_json, "name": any_json},
        )
        | any_json
    )


def _messages() -> st.SearchStrategy[Any]:
    return st.lists(_message(), min_size=1, max_size=3) | any_json


ANTHROPIC_OPTIONAL = [
    "system", "stop_sequences", "stream", "temperature", "top_p", "top_k", "tools", "tool_choice",
    "metadata", "thinking", "service_tier",
]  # fmt: skip
OPENAI_OPTIONAL = [
    "tools", "tool_choice", "response_format", "stop", "stream", "stream_options", "temperature", "top_p",
    "max_tokens", "max_completion_tokens", "n", "seed", "logit_bias", "reasoning", "user", "usage",
    "parallel_tool_calls", "prediction", "modalities",
]  # fmt: skip

# Valid requests, one per feature; `_mutated` replaces one or two of their values (anywhere, at any
# depth) with any JSON, so nearly every example gets past the first checks to a wrong type deep inside.
TOOL = {"name": "weather", "description": "d", "input_schema": {"type": "object", "properties": {}}}
ANTHROPIC_VALID: list[dict[str, Any]] = [
    {
        "model": MODEL,
        "max_tokens": 16,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hi"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AA=="},
                    },
                    {"type": "image", "source": {"type": "url", "url": "http://192.0.0.8/x.png"}},
                ],
            }
        ],
        "stop_sequences": ["END"],
        "temperature": 0.5,
        "metadata": {"user_id": "u1"},
    },
    {
        "model": MODEL,
        "max_tokens": 16,
        "tools": [TOOL],
        "tool_choice": {"type": "tool", "name": "weather", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "checking"},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "is_error": False,
                        "content": [
                            {"type": "text", "text": "sunny"},
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": "AA=="},
                            },
                        ],
                    },
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
    },
    {
        "model": MODEL,
        "max_tokens": 4096,
        "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "doc"},
                    },
                    {"type": "text", "text": "summarise"},
                ],
            }
        ],
    },
]
OPENAI_VALID: list[dict[str, Any]] = [
    {
        "model": MODEL,
        "max_tokens": 16,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hi"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AA==", "detail": "low"},
                    },
                ],
            },
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}},
        },
        "stop": ["END"],
    },
    {
        "model": MODEL,
        "max_tokens": 16,
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "sunny"}]},
        ],
        "reasoning": {"effort": "low"},
    },
]


def _paths(value: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in `value` a value can go: each existing key and index, and one new key per object."""
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        out.append((*here, "type" if "type" not in value else "text"))
        for k, v in value.items():
            out.append((*here, k))
            out += _paths(v, (*here, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append((*here, i))
            out += _paths(v, (*here, i))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value.get(head), rest, new)}
    if isinstance(value, list) and isinstance(head, int) and head < len(value):
        return [_replace(v, rest, new) if i == head else v for i, v in enumerate(value)]
    return value


@st.composite
def _mutated(draw: Any, valid: list[dict[str, Any]]) -> Any:
    body: Any = draw(st.sampled_from(valid))
    for _ in range(draw(st.integers(min_value=1, max_value=2))):
        paths = _paths(body)
        if not paths:
            break
        body = _replace(body, draw(st.sampled_from(paths)), draw(any_json))
    return body


anthropic_bodies = (
    _mutated(ANTHROPIC_VALID)
    | st.fixed_dictionaries(
        {
            "model": st.just(MODEL) | any_json,
            "max_tokens": st.just(16) | any_json,
            "messages": _messages(),
        },
        optional={k: any_json for k in ANTHROPIC_OPTIONAL},
    )
    | any_json
)
openai_bodies = (
    _mutated(OPENAI_VALID)
    | st.fixed_dictionaries(
        {"model": st.just(MODEL) | any_json, "messages": _messages()},
        optional={k: any_json for k in OPENAI_OPTIONAL},
    )
    | any_json
)


@pytest.fixture
def fuzz_secret(live, security_catalog):
    return make_key(make_org(credits="50"), name="shapes")[1]


def _post(live: Any, path: str, secret: str, body: Any) -> httpx.Response:
    return httpx.post(
        f"{live.api}{path}",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {secret}", "content-type": "application/json"},
        timeout=30,
    )


def _documented_503(resp: httpx.Response) -> bool:
    """The one 5xx a request may earn, as in test_fuzz.py: no endpoint of the model can serve it (the
    simulated model takes no images), saying why."""
    if resp.status_code != 503:
        return False
    return resp.json()["error"]["message"].startswith("No provider can serve this request")


def _check(resp: httpx.Response, anthropic: bool) -> None:
    assert resp.status_code < 500 or _documented_503(resp), (resp.status_code, resp.text[:2000])
    if resp.status_code < 400:
        return
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    message = body["error"]["message"]
    assert isinstance(message, str) and message, body
    if anthropic:
        assert set(body) == {"type", "error"} and body["type"] == "error", body
        assert isinstance(body["error"]["type"], str), body
    else:
        assert set(body) == {"error"} and body["error"]["code"] == resp.status_code, body


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@FUZZ
@given(body=anthropic_bodies)
def test_messages_never_5xx_and_errors_are_anthropic_shaped(live, fuzz_secret, body):
    _check(_post(live, "/messages", fuzz_secret, body), anthropic=True)


@FUZZ
@given(body=openai_bodies)
def test_chat_completions_never_5xx_and_errors_are_openai_shaped(live, fuzz_secret, body):
    _check(_post(live, "/chat/completions", fuzz_secret, body), anthropic=False)
