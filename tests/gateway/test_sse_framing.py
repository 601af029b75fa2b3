"""Server-sent events framing in Adapter.stream: whole events are parsed at once (the fast path), and
events split across reads at any byte, CRLF line ends, multi-line data, comments and `event:` lines
still come out exactly as the provider meant them. The upstream is a real HTTP server on 127.0.0.1
that writes the stream in the pieces each case gives, flushing between them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from aiohttp import web

from routing.adapters.base import CallContext, UpstreamFailure, Usage
from routing.adapters.openai import OpenAIAdapter
from routing.catalog.snapshot import EndpointInfo
from routing.gateway import upstream
from routing.request import completion_request


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


CHUNKS = [
    _chunk({"role": "assistant", "content": ""}),
    *[_chunk({"content": f"w{i} "}) for i in range(12)],
    _chunk({}, "stop"),
    {"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 12}},
]
TEXT = "".join(f"w{i} " for i in range(12))


def _body(newline: bytes) -> bytes:
    events = [b"data: " + orjson.dumps(c) + newline + newline for c in CHUNKS]
    events.insert(3, b": keep-alive comment" + newline + newline)
    events.insert(
        5, b"event: message" + newline + b"data: " + orjson.dumps(_chunk({"content": ""})) + newline + newline
    )
    return b"".join(events) + b"data: [DONE]" + newline + newline


def _multiline_body() -> bytes:
    """One event whose JSON is spread over several `data:` lines (joined with newlines, still JSON)."""
    first = orjson.dumps(CHUNKS[0])
    split = first.index(b",")
    head = b"data: " + first[: split + 1] + b"\ndata: " + first[split + 1 :] + b"\n\n"
    rest = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in CHUNKS[1:])
    return head + rest + b"data: [DONE]\n\n"


def _pieces(body: bytes, how: str) -> list[bytes]:
    if how == "whole":
        return [body]
    if how == "bytes":
        return [body[i : i + 7] for i in range(0, len(body), 7)]
    if how == "mid-terminator":  # every cut falls between the two newlines that end an event
        out, start = [], 0
        for i in range(len(body) - 1):
            if body[i : i + 2] == b"\n\n":
                out.append(body[start : i + 1])
                start = i + 1
        return [*out, body[start:]]
    raise AssertionError(how)


async def _serve(pieces: list[bytes]) -> tuple[web.AppRunner, int]:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
            await asyncio.sleep(0.002)  # a separate read on the other side
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


def _endpoint(port: int) -> EndpointInfo:
    return EndpointInfo(
        id=1,
        model_slug="t/m",
        provider_slug="t",
        provider_name="T",
        api_format="openai",
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key_env="",
        provider_model_id="m",
        timeout_connect=2.0,
        timeout_first_byte=5.0,
        timeout_between_chunks=5.0,
        timeout_total=20.0,
        prompt_units=0,
        completion_units=0,
        cache_read_units=0,
        cache_write_units=0,
        reasoning_units=0,
        request_units=0,
        image_units=0,
        context_length=1000,
        max_completion_tokens=None,
        quantization="",
        supported_parameters=frozenset(),
        data_policy={},
        prompt_caching="none",
    )


async def _collect(pieces: list[bytes]) -> list[Any]:
    runner, port = await _serve(pieces)
    try:
        now = time.monotonic()
        ctx = CallContext(endpoint=_endpoint(port), api_key="", started=now, deadline=now + 20)
        fields = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        req = completion_request(fields, kind="chat", models=["t/m"])
        return [item async for item in OpenAIAdapter().stream(ctx, req)]
    finally:
        await upstream.close_upstream_pool()
        await runner.cleanup()


def _text(items: list[Any]) -> str:
    return "".join(
        (c.get("delta") or {}).get("content") or ""
        for i in items
        if isinstance(i, dict)
        for c in i["choices"]
    )


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("how", ["whole", "bytes", "mid-terminator"])
def test_events_come_out_whole_however_the_bytes_arrive(newline: bytes, how: str) -> None:
    items = asyncio.run(_collect(_pieces(_body(newline), how)))
    usage = [i for i in items if isinstance(i, Usage)]
    chunks = [i for i in items if isinstance(i, dict)]
    assert _text(items) == TEXT
    assert len(chunks) == len(CHUNKS) - 1 + 1  # every content chunk, plus the `event: message` one
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert len(usage) == 1 and (usage[0].prompt_tokens, usage[0].completion_tokens) == (7, 12)


@pytest.mark.parametrize("how", ["whole", "bytes"])
def test_an_event_spread_over_several_data_lines(how: str) -> None:
    items = asyncio.run(_collect(_pieces(_multiline_body(), how)))
    assert _text(items) == TEXT
    assert next(i for i in items if isinstance(i, dict))["choices"][0]["delta"]["role"] == "assistant"


def test_a_stream_cut_before_done_is_truncated_not_complete() -> None:
    body = _body(b"\n")
    cut = body[: body.index(b"data: [DONE]")]
    with pytest.raises(UpstreamFailure) as failure:
        asyncio.run(_collect([cut]))
    assert failure.value.kind == "truncated"
