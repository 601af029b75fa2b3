"""The built-in simulated provider: deterministic answers, tool calls and JSON, real token counts, no network.

Options ride on the provider's base_url query string, e.g. `sim://local?delay_ms=20`:
`delay_ms` between streamed tokens, `ttfb_ms` before the first one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import struct
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from routing.adapters.base import Adapter, CallContext, Completion, Embeddings, Usage
from routing.gateway.tokens import count_messages, count_text
from routing.request import Request

SIM_EMBEDDING_DIMENSIONS = 64

SIM_TEXT = (
    "Hello from Switchyard's simulated model. This answer is deterministic, streams token by token, "
    "and is billed from real token counts, so you can try the whole API without provider keys."
)


def _options(base_url: str) -> dict[str, float]:
    query = parse_qs(urlsplit(base_url).query)
    return {k: float(v[0]) for k, v in query.items() if v and v[0].replace(".", "", 1).isdigit()}


def _last_user_text(req: Request) -> str:
    if req.kind == "completion":
        prompt = req.prompt or ""
        return prompt[-1] if isinstance(prompt, list) else prompt
    for m in reversed(req.messages or []):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _example(schema: Any) -> Any:
    """A deterministic value that satisfies a (simple) JSON schema."""
    if not isinstance(schema, dict):
        return "example"
    kind = schema.get("type")
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {name: _example(sub) for name, sub in props.items()}
    if kind == "array":
        return [_example(schema.get("items"))]
    if kind in ("number", "integer"):
        return 42
    if kind == "boolean":
        return True
    return "example"


def _tool_call(req: Request) -> dict[str, Any] | None:
    tools = req.tools or []
    choice = req.fields.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    # Answer a tool result with text, as a model would, unless a tool call is forced.
    if (
        (req.messages or [])
        and (req.messages or [])[-1].get("role") == "tool"
        and choice != "required"
        and not isinstance(choice, dict)
    ):
        return None
    tool = tools[0]
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        tool = next((t for t in tools if t["function"]["name"] == wanted), tool)
    fn = tool["function"]
    args = json.dumps(_example(fn.get("parameters") or {"type": "object"}))
    digest = hashlib.sha256((fn["name"] + args).encode()).hexdigest()[:24]
    return {"id": f"call_{digest}", "type": "function", "function": {"name": fn["name"], "arguments": args}}


def _answer(req: Request, model: str) -> tuple[str | None, dict[str, Any] | None, str]:
    """(content, tool_call, finish_reason) for a request."""
    call = _tool_call(req) if req.kind == "chat" else None
    if call is not None:
        return None, call, "tool_calls"
    fmt = (req.response_format or {}).get("type")
    if fmt == "json_schema":
        schema = ((req.response_format or {}).get("json_schema") or {}).get("schema") or {}
        return json.dumps(_example(schema)), None, "stop"
    if fmt == "json_object":
        return json.dumps({"model": model, "echo": _last_user_text(req)[:80]}), None, "stop"
    echo = " ".join(_last_user_text(req).split()[:12])
    text = SIM_TEXT + (f" You said: {echo}" if echo else "")
    limit = req.max_tokens
    words = text.split(" ")
    if limit is not None and limit < len(words):
        return " ".join(words[:limit]), None, "length"
    return text, None, "stop"


def _usage(req: Request, content: str | None, call: dict[str, Any] | None) -> Usage:
    if req.kind == "completion":
        prompt = req.prompt or ""
        prompt_tokens = sum(count_text(p) for p in prompt) if isinstance(prompt, list) else count_text(prompt)
    else:
        prompt_tokens = count_messages(req.messages or [])
    completion = count_text(content or "") + (count_text(call["function"]["arguments"]) + 3 if call else 0)
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion)


class SimulatedAdapter(Adapter):
    async def embed(self, ctx: CallContext, req: Request) -> Embeddings:
        return sim_embeddings(req)

    async def complete(self, ctx: CallContext, req: Request) -> Completion:
        opts = _options(ctx.endpoint.base_url)
        content, call, finish = _answer(req, ctx.endpoint.model_slug)
        delay = (opts.get("ttfb_ms", 0) + opts.get("delay_ms", 0) * len((content or "").split())) / 1000
        if delay:
            await asyncio.sleep(delay)
        if req.kind == "completion":
            choice: dict[str, Any] = {"index": 0, "text": content, "logprobs": None, "finish_reason": finish}
        else:
            message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
            if call:
                message["tool_calls"] = [call]
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        return Completion(choices=[choice], usage=_usage(req, content, call), native_finish_reason=finish)

    async def stream(self, ctx: CallContext, req: Request) -> AsyncGenerator[dict[str, Any] | Usage, None]:
        opts = _options(ctx.endpoint.base_url)
        content, call, finish = _answer(req, ctx.endpoint.model_slug)
        delay = opts.get("delay_ms", 0) / 1000
        if opts.get("ttfb_ms"):
            await asyncio.sleep(opts["ttfb_ms"] / 1000)
        chat = req.kind == "chat"
        if chat:
            yield {
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                ]
            }
        if call:
            head = {**call, "index": 0, "function": {"name": call["function"]["name"], "arguments": ""}}
            yield {"choices": [{"index": 0, "delta": {"tool_calls": [head]}, "finish_reason": None}]}
            args = call["function"]["arguments"]
            for i in range(0, len(args), 8):
                if delay:
                    await asyncio.sleep(delay)
                piece = {"index": 0, "function": {"arguments": args[i : i + 8]}}
                yield {"choices": [{"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}]}
        else:
            words = (content or "").split(" ")
            for i, word in enumerate(words):
                if delay:
                    await asyncio.sleep(delay)
                text = word if i == 0 else " " + word
                part = {"content": text} if chat else None
                choice = (
                    {"index": 0, "delta": part, "finish_reason": None}
                    if chat
                    else {"index": 0, "text": text, "logprobs": None, "finish_reason": None}
                )
                yield {"choices": [choice]}
        last = (
            {"index": 0, "delta": {}, "finish_reason": finish}
            if chat
            else {"index": 0, "text": "", "logprobs": None, "finish_reason": finish}
        )
        yield {"choices": [last]}
        yield _usage(req, content, call)


def sim_embedding(text: str, dimensions: int = SIM_EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic unit vector for a text (float32-exact, so base64 round trips compare equal)."""
    raw = b""
    counter = 0
    while len(raw) < dimensions * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [(b - 127.5) / 127.5 for b in raw[:dimensions]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in values]


def sim_embeddings(req: Request) -> Embeddings:
    value = req.input
    # One string or one token array is a single input; otherwise a list of them.
    single = not isinstance(value, list) or (bool(value) and all(isinstance(v, int) for v in value))
    inputs = [value] if single else value
    dims = int(req.fields.get("dimensions") or SIM_EMBEDDING_DIMENSIONS)
    data = []
    for i, text in enumerate(inputs):
        vector = sim_embedding(text if isinstance(text, str) else json.dumps(text), dims)
        encoded: Any = vector
        if req.fields.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": encoded})
    tokens = sum(count_text(t) if isinstance(t, str) else len(t) for t in inputs)
    return Embeddings(data=data, usage=Usage(prompt_tokens=tokens))
