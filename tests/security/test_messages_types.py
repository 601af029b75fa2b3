"""`POST /api/v1/messages` with a wrong type anywhere in the body: a 400 in Anthropic's error shape that
names the field, never a 500 (it answered 500, in the OpenAI shape, for a content block whose `type`
was a list or an object, in user content and inside a `tool_result`)."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from tests.factories import make_key, make_org

MODEL = "switchyard/sim-1"
BASE: dict[str, Any] = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}
TOOL_TURNS: list[dict[str, Any]] = [
    {"role": "user", "content": "weather?"},
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}],
    },
]
WRONG_MESSAGES: list[Any] = [{"role": "user"}, "hi", 3, None, []]


def body(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    out.update(changes)
    return out


def user(*blocks: Any) -> dict[str, Any]:
    return body(messages=[{"role": "user", "content": list(blocks)}])


def tool_result(**fields: Any) -> dict[str, Any]:
    block = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny", **fields}
    return body(messages=[*TOOL_TURNS, {"role": "user", "content": [block]}])


def assistant(*blocks: Any) -> dict[str, Any]:
    return body(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": list(blocks)}])


CASES: list[tuple[str, Any]] = [
    ("body is a list", [BASE]),
    ("body is a string", "hello"),
    ("body is null", None),
    *[(f"model={v!r}", body(model=v)) for v in ([MODEL], {"id": MODEL}, 3, None)],
    *[(f"max_tokens={v!r}", body(max_tokens=v)) for v in ("16", 16.5, [16], True, None, -1, 0)],
    *[(f"messages={v!r}", body(messages=v)) for v in WRONG_MESSAGES],
    *[(f"messages[0]={v!r}", body(messages=[v])) for v in ("hi", ["hi"], 3, None)],
    *[(f"role={v!r}", body(messages=[{"role": v, "content": "hi"}])) for v in (["user"], {"r": 1}, 1, None)],
    *[
        (f"content={v!r}", body(messages=[{"role": "user", "content": v}]))
        for v in (3, {"type": "text"}, None)
    ],
    *[(f"block={v!r}", user(v)) for v in ("hi", 3, ["text"], None)],
    # The reported 500s: a content block's type that is a list or an object.
    *[(f"block type={v!r}", user({"type": v, "text": "hi"})) for v in (["text"], {"t": "text"}, 3, None)],
    ("block without type", user({"text": "hi"})),
    *[(f"text={v!r}", user({"type": "text", "text": v})) for v in ([1], {"a": 1}, 3, None)],
    *[
        (f"cache_control={v!r}", user({"type": "text", "text": "x", "cache_control": v}))
        for v in ("on", [1], 3)
    ],
    *[(f"image source={v!r}", user({"type": "image", "source": v})) for v in ("u", [1], 3)],
    *[
        (f"image source.type={v!r}", user({"type": "image", "source": {"type": v, "url": "http://x.test/a"}}))
        for v in (["url"], {"u": 1})
    ],
    (
        "image media_type list",
        user({"type": "image", "source": {"type": "base64", "media_type": ["image/png"], "data": "AA=="}}),
    ),
    ("image url object", user({"type": "image", "source": {"type": "url", "url": {"href": "x"}}})),
    *[(f"document source={v!r}", user({"type": "document", "source": v})) for v in ("d", [1], 3, None)],
    (
        "document source.data list",
        user({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": [1]}}),
    ),
    (
        "document source.type list",
        user({"type": "document", "source": {"type": ["text"], "data": "x"}}),
    ),
    # tool_result: the other reported 500
    *[
        (f"tool_result content[0].type={v!r}", tool_result(content=[{"type": v, "text": "x"}]))
        for v in (["text"], {"t": 1})
    ],
    *[(f"tool_result content={v!r}", tool_result(content=v)) for v in (3, {"type": "text"}, True)],
    *[(f"tool_result content[0]={v!r}", tool_result(content=[v])) for v in ("x", 3, None, ["text"])],
    *[(f"tool_result text={v!r}", tool_result(content=[{"type": "text", "text": v}])) for v in ([1], 3)],
    *[(f"tool_result tool_use_id={v!r}", tool_result(tool_use_id=v)) for v in (["toolu_1"], 1, None)],
    *[(f"tool_result is_error={v!r}", tool_result(is_error=v)) for v in ("yes", [1], {"a": 1})],
    (
        "tool_result image source list",
        tool_result(content=[{"type": "image", "source": ["x"]}]),
    ),
    *[
        (f"assistant block type={v!r}", assistant({"type": v, "text": "x"}))
        for v in (["text"], {"t": 1}, None)
    ],
    *[(f"assistant block={v!r}", assistant(v)) for v in ("x", 3, ["x"])],
    *[
        (f"tool_use input={v!r}", assistant({"type": "tool_use", "id": "t", "name": "n", "input": v}))
        for v in ("{}", [1], 3)
    ],
    *[
        (f"tool_use id={v!r}", assistant({"type": "tool_use", "id": v, "name": "n", "input": {}}))
        for v in ([1], 3)
    ],
    *[(f"system={v!r}", body(system=v)) for v in (3, {"type": "text"}, True)],
    *[(f"system[0]={v!r}", body(system=[v])) for v in ("hi", 3, ["hi"], None)],
    *[
        (f"system[0].type={v!r}", body(system=[{"type": v, "text": "hi"}]))
        for v in (["text"], {"t": 1}, "image")
    ],
    *[(f"system[0].text={v!r}", body(system=[{"type": "text", "text": v}])) for v in ([1], 3, None)],
    *[(f"stop_sequences={v!r}", body(stop_sequences=v)) for v in ("END", [1], {"a": 1}, [["x"]])],
    *[(f"stream={v!r}", body(stream=v)) for v in ("yes", 1, [True], {"a": 1})],
    *[(f"temperature={v!r}", body(temperature=v)) for v in ("0.5", [0.5], {"t": 1}, True)],
    *[(f"top_p={v!r}", body(top_p=v)) for v in ("0.5", [0.5], {"t": 1})],
    *[(f"top_k={v!r}", body(top_k=v)) for v in ("5", 2.5, [5], {"k": 5})],
    *[(f"tools={v!r}", body(tools=v)) for v in ({"name": "x"}, "x", 3, True)],
    *[(f"tools[0]={v!r}", body(tools=[v])) for v in ("x", 3, ["x"], None)],
    *[
        (f"tools[0].name={v!r}", body(tools=[{"name": v, "input_schema": {"type": "object"}}]))
        for v in (["x"], 3, {"n": 1})
    ],
    *[
        (f"tools[0].input_schema={v!r}", body(tools=[{"name": "x", "input_schema": v}]))
        for v in ("{}", [1], 3)
    ],
    *[
        (f"tools[0].description={v!r}", body(tools=[{"name": "x", "description": v, "input_schema": {}}]))
        for v in ([1], {"d": 1}, 3)
    ],
    *[
        (f"tools[0].type={v!r}", body(tools=[{"type": v, "name": "x", "input_schema": {}}]))
        for v in (["custom"], {"t": 1})
    ],
    *[(f"tool_choice={v!r}", body(tool_choice=v)) for v in ("auto", ["auto"], 3)],
    *[(f"tool_choice.type={v!r}", body(tool_choice={"type": v})) for v in (["auto"], {"t": 1}, 3)],
    *[(f"tool_choice.name={v!r}", body(tool_choice={"type": "tool", "name": v})) for v in (["x"], 3, None)],
    (
        "tool_choice.disable_parallel_tool_use string",
        body(tool_choice={"type": "auto", "disable_parallel_tool_use": "yes"}),
    ),
    *[(f"metadata={v!r}", body(metadata=v)) for v in ("m", [1], 3)],
    *[(f"metadata.user_id={v!r}", body(metadata={"user_id": v})) for v in ([1], {"u": 1}, 3)],
    *[(f"thinking={v!r}", body(thinking=v)) for v in ("on", [1], 3, True)],
    *[
        (f"thinking.type={v!r}", body(thinking={"type": v, "budget_tokens": 2048}))
        for v in (["enabled"], {"t": 1}, 3)
    ],
    *[
        (f"thinking.budget_tokens={v!r}", body(thinking={"type": "enabled", "budget_tokens": v}))
        for v in ("2048", [1], 2.5)
    ],
    *[(f"models={v!r}", body(models=v)) for v in ("x", [1], {"a": 1})],
    *[(f"provider={v!r}", body(provider=v)) for v in ("x", [1], 3)],
    *[(f"usage={v!r}", body(usage=v)) for v in ("x", [1], 3)],
]


@pytest.fixture
def anthropic_key(live, security_catalog):
    return make_key(make_org(credits="5"))[1]


@pytest.mark.parametrize("case", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_wrong_types_get_a_400_in_anthropics_shape(live, anthropic_key, case):
    resp = httpx.post(
        f"{live.api}/messages",
        content=httpx.Request("POST", "http://x", json=case).content,
        headers={"x-api-key": anthropic_key, "content-type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == 400, resp.text
    data = resp.json()
    assert set(data) == {"type", "error"} and data["type"] == "error", data
    assert data["error"]["type"] == "invalid_request_error", data
    assert isinstance(data["error"]["message"], str) and data["error"]["message"], data


def test_the_valid_base_request_is_served(live, anthropic_key):
    """The table's base body and tool turns are valid: only the changed field makes each case wrong."""
    for ok in (BASE, tool_result()):
        resp = httpx.post(f"{live.api}/messages", json=ok, headers={"x-api-key": anthropic_key}, timeout=30)
        assert resp.status_code == 200, resp.text
