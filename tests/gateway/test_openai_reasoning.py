"""OpenRouter's unified `reasoning` object on OpenAI-format endpoints: sent as `reasoning_effort`, only
to endpoints whose capability table lists `reasoning`."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from routing.adapters.openai import OpenAIAdapter, reasoning_effort
from routing.request import completion_request


@pytest.mark.parametrize(
    ("reasoning", "max_tokens", "effort"),
    [
        ({"effort": "high"}, None, "high"),
        ({"effort": "minimal"}, 100, "minimal"),
        ({"max_tokens": 100}, 1000, "minimal"),
        ({"max_tokens": 300}, 1000, "low"),
        ({"max_tokens": 500}, 1000, "medium"),
        ({"max_tokens": 900}, 1000, "high"),
        ({"exclude": True}, None, "medium"),
        ({"enabled": False, "effort": "high"}, None, None),
        (None, None, None),
        ("high", None, None),
    ],
)
def test_reasoning_effort(reasoning, max_tokens, effort):
    assert reasoning_effort(reasoning, max_tokens) == effort


def _body(supported: set[str], **req):
    endpoint = SimpleNamespace(
        provider_model_id="o4-mini",
        supported_parameters=frozenset(supported),
        provider_slug="openai",
        base_url="http://127.0.0.1:9/v1",
    )
    ctx = SimpleNamespace(endpoint=endpoint, api_key="sk-platform")
    fields = {"messages": [{"role": "user", "content": "q"}], **req}
    request = completion_request(fields, kind="chat", models=["x/y"])
    _, _, raw = OpenAIAdapter().build_request(ctx, request, stream=False)  # type: ignore[arg-type]
    return orjson.loads(raw)


def test_reasoning_is_sent_only_where_supported():
    asked = {"reasoning": {"effort": "low"}, "max_tokens": 500}
    body = _body({"reasoning", "max_tokens"}, **asked)
    assert body["reasoning_effort"] == "low" and body["max_completion_tokens"] == 500
    assert "reasoning" not in body  # the unified object itself is not an OpenAI field
    assert "reasoning_effort" not in _body({"max_tokens"}, **asked)
