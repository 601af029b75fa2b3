"""Input limits through the live server: body size (413), JSON nesting depth, string lengths, message
count and max_tokens bounds (400 naming the field), all in the error shape, on every front door."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlparse

import httpx
import pytest

from routing.models import Generation
from tests.factories import make_key, make_org
from tests.gateway.ratelimit_env import *  # noqa: F403 - the shared fixtures
from tests.gateway.ratelimit_env import HELLO, body, post

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def secret(rl_catalog):
    return make_key(make_org(credits="1"))[1]


def _error(r: httpx.Response, status: int, field: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["code"] == status and error["message"]
    if field is not None:
        assert error["metadata"]["field"] == field, error
        assert error["message"].startswith(f"{field}: "), error
    return error


def _nested(depth: int) -> dict:
    """A JSON schema `depth` objects deep."""
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


def _tool(parameters: dict) -> dict:
    return {"type": "function", "function": {"name": "f", "parameters": parameters}}


def test_body_larger_than_the_limit_is_413(live, secret, settings):
    settings.SWITCHYARD_MAX_BODY_BYTES = 4096
    fits = body(messages=[{"role": "user", "content": "x" * 3000}])
    assert post(live.api, secret, fits).status_code == 200
    too_big = body(messages=[{"role": "user", "content": "x" * 5000}])
    error = _error(post(live.api, secret, too_big), 413)
    assert error["metadata"]["limit"] == 4096 and "4096 bytes" in error["message"]


def test_default_body_limit_is_four_mebibytes_and_holds(live, secret, settings):
    assert settings.SWITCHYARD_MAX_BODY_BYTES == 4 * 1024 * 1024
    settings.SWITCHYARD_MAX_STRING_CHARS = 8 * 1024 * 1024  # let the body limit be the one that fires
    big = body(messages=[{"role": "user", "content": "x" * (4 * 1024 * 1024)}])
    _error(post(live.api, secret, big), 413)


def test_a_lying_content_length_cannot_make_the_server_read_forever(live, secret, settings):
    """Chunked upload with no Content-Length: the server stops at the limit and answers 413."""
    settings.SWITCHYARD_MAX_BODY_BYTES = 2048

    def chunks():
        yield b'{"model": "rl/paid", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}]}'

    r = httpx.post(
        f"{live.api}/chat/completions",
        content=chunks(),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        timeout=30,
    )
    _error(r, 413)


def test_json_nesting_deeper_than_the_limit_is_400_naming_the_field(live, secret, settings):
    settings.SWITCHYARD_MAX_JSON_DEPTH = 16
    # body(1) > tools(2) > [0](3) > function(4) > parameters(5) > properties(6) > x(7) ...
    shallow = body(tools=[_tool(_nested(5))])
    assert post(live.api, secret, shallow).status_code == 200
    error = _error(post(live.api, secret, body(tools=[_tool(_nested(12))])), 400)
    assert error["metadata"]["field"].startswith("tools[0].function.parameters.properties.x")
    assert "deeper than 16 levels" in error["message"] and error["metadata"]["limit"] == 16


def test_default_depth_limit_and_orjsons_own_limit_are_clean_400s(live, secret):
    _error(post(live.api, secret, body(tools=[_tool(_nested(40))])), 400)  # 85 levels > 64
    # Deeper than any parser should go (orjson stops at 1024): still a 400 naming the body, never a 500.
    raw = '{"model": "rl/paid", "messages": [{"role": "user", "content": "hi"}], "x": ' + "[" * 5000
    raw += "]" * 5000 + "}"
    r = httpx.post(
        f"{live.api}/chat/completions",
        content=raw,
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )
    error = _error(r, 400, "body")
    assert "nested deeper than" in error["message"]


def test_string_longer_than_the_limit_is_400_naming_the_field(live, secret, settings):
    settings.SWITCHYARD_MAX_STRING_CHARS = 1000
    ok = body(messages=[{"role": "user", "content": "z" * 1000}])
    assert post(live.api, secret, ok).status_code == 200
    long_content = body(messages=[*HELLO, {"role": "user", "content": "z" * 1001}])
    error = _error(post(live.api, secret, long_content), 400, "messages[1].content")
    assert "longer than 1000 characters (1001)" in error["message"]
    parts = body(messages=[{"role": "user", "content": [{"type": "text", "text": "z" * 2000}]}])
    _error(post(live.api, secret, parts), 400, "messages[0].content[0].text")
    _error(post(live.api, secret, body(user="u" * 1001)), 400, "user")
    _error(post(live.api, secret, body(stop=["ok", "s" * 5000])), 400, "stop[1]")


def test_too_many_messages_is_400(live, secret, settings):
    settings.SWITCHYARD_MAX_MESSAGES = 5
    assert post(live.api, secret, body(messages=HELLO * 5)).status_code == 200
    error = _error(post(live.api, secret, body(messages=HELLO * 6)), 400, "messages")
    assert "at most 5 messages, got 6" in error["message"]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_bounds(live, secret, settings, field):
    settings.SWITCHYARD_MAX_OUTPUT_TOKENS = 1000
    payload = body()
    payload.pop("max_tokens")
    assert post(live.api, secret, {**payload, field: 1000}).status_code == 200
    for bad in (0, -5, 1001, 10**12):
        error = _error(post(live.api, secret, {**payload, field: bad}), 400, field)
        assert "between 1 and 1000" in error["message"]
    _error(post(live.api, secret, {**payload, field: "12"}), 400, field)  # not an integer


def test_limits_apply_to_the_messages_and_completions_front_doors(live, secret, settings):
    settings.SWITCHYARD_MAX_MESSAGES = 2
    settings.SWITCHYARD_MAX_STRING_CHARS = 100
    anthropic = {"model": "rl/paid", "max_tokens": 16, "messages": HELLO * 3}
    r = post(live.api, secret, anthropic, "/messages")
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "at most 2 messages" in r.json()["error"]["message"]
    r = post(live.api, secret, {**anthropic, "messages": HELLO, "max_tokens": 0}, "/messages")
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    legacy = {"model": "rl/paid", "prompt": "p" * 101, "max_tokens": 8}
    _error(post(live.api, secret, legacy, "/completions"), 400, "prompt")


def test_a_refused_body_is_never_sent_upstream_or_charged(live, secret, settings):
    settings.SWITCHYARD_MAX_MESSAGES = 1
    for _ in range(3):
        _error(post(live.api, secret, body(messages=HELLO * 2)), 400, "messages")
    assert not Generation.objects.exists()


def test_content_length_beyond_the_limit_is_413_without_a_body(live, secret, settings):
    """A client that announces a huge body gets 413 as soon as the limit is crossed, in the error shape."""
    settings.SWITCHYARD_MAX_BODY_BYTES = 1024
    url = urlparse(live.url)
    payload = json.dumps(body(messages=[{"role": "user", "content": "q" * 2000}])).encode()
    head = (
        f"POST /api/v1/chat/completions HTTP/1.1\r\nHost: {url.hostname}\r\n"
        f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(head + payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    assert b" 413 " in status_line
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["error"]["code"] == 413


def test_django_api_views_answer_413_in_the_error_shape_too(live, settings):
    """The Stripe webhook reads its raw body itself (it verifies the signature over it): over the limit
    is a JSON 413, not a 500."""
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == settings.SWITCHYARD_MAX_BODY_BYTES
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    r = httpx.post(
        f"{live.api}/stripe/webhook",
        content=b"{" + b" " * 4096 + b"}",
        headers={"Stripe-Signature": "t=1,v1=0"},
    )
    error = _error(r, 413)
    assert error["metadata"]["limit"] == 1024
