"""Fake Anthropic Messages API (`POST /v1/messages`, whole and SSE) that validates the wire format and records requests."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.base import ThreadedServer

GREETING = "Hello from fake-anthropic."
BLOCK_TYPES_USER = {"text", "image", "tool_result", "document"}
BLOCK_TYPES_ASSISTANT = {"text", "tool_use", "thinking", "redacted_thinking"}


@dataclass
class Script:
    """What the fake does with the next request. kind: ok | status | stream_error (error event after
    message_start) | midstream_error (error event after some text)."""

    kind: str = "ok"
    status: int = 529
    error_type: str = "overloaded_error"
    message: str = "Overloaded"
    content: str | None = None
    thinking: str | None = None
    input_tokens: int | None = None
    cache_read: int = 0
    cache_creation: int = 0
    output_tokens: int | None = None
    stop_reason: str | None = None
    # Bill input as Anthropic does: the system prompt, tool definitions and every block count, and a
    # PDF document costs PDF_PAGE_TOKENS per page (its text and its page image), whatever its bytes.
    bill_whole_body: bool = False
    # Sent verbatim as the answer's usage (message_start's, and message_delta's output_tokens when
    # streamed), for tests of bad provider usage: negative, non-integer, non-numeric, huge counts.
    usage: dict[str, Any] | None = None


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    json: Any
    problems: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)  # the SSE event names streamed back, in order


def _words(text: str) -> int:
    return len(text.split())


PDF_PAGE_TOKENS = 3_000  # the top of Anthropic's documented 1,500-3,000 text tokens per page


def pdf_pages(blocks: Any) -> int:
    """Pages of the base64 PDF documents among `blocks` (and inside their tool results)."""
    pages = 0
    for block in blocks if isinstance(blocks, list) else ():
        if not isinstance(block, dict):
            continue
        source = block.get("source")
        if block.get("type") == "document" and isinstance(source, dict) and source.get("type") == "base64":
            pdf = base64.b64decode(source.get("data") or "")
            pages += len(re.findall(rb"/Type\s*/Page(?!s)", pdf))
        elif block.get("type") == "tool_result":
            pages += pdf_pages(block.get("content"))
    return pages


def example(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "example"
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {k: example(v) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example(schema.get("items"))]
    if kind in ("integer", "number"):
        return 7
    if kind == "boolean":
        return True
    return "Paris"


def validate(body: Any) -> list[str]:
    """The Messages API's rules that a translator can get wrong; each problem is one string."""
    problems: list[str] = []
    if not isinstance(body, dict):
        return ["body is not an object"]
    if not isinstance(body.get("model"), str):
        problems.append("model: required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        problems.append("max_tokens: required positive integer")
    allowed = {
        "model", "max_tokens", "messages", "system", "stop_sequences", "stream", "temperature",
        "top_p", "top_k", "tools", "tool_choice", "metadata", "thinking", "cache_control", "container",
    }  # fmt: skip
    for key in set(body) - allowed:
        problems.append(f"{key}: Extra inputs are not permitted")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list) or any(b.get("type") != "text" for b in system):
            problems.append("system: must be a string or text blocks")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*problems, "messages: required"]
    tool_ids: set[str] = set()
    previous = None
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ("user", "assistant"):
            problems.append(f"messages.{i}.role: {role!r} is not user or assistant")
        if role == previous:
            problems.append(f"messages.{i}: roles must alternate")
        previous = role
        content = m.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list) or not content:
            problems.append(f"messages.{i}.content: must be a string or non-empty list")
            continue
        allowed_types = BLOCK_TYPES_USER if role == "user" else BLOCK_TYPES_ASSISTANT
        seen_other = False
        for j, block in enumerate(content):
            kind = block.get("type")
            if kind not in allowed_types:
                problems.append(f"messages.{i}.content.{j}.type: {kind!r} not allowed for {role}")
            if kind == "tool_use":
                tool_ids.add(block.get("id"))
                if not isinstance(block.get("input"), dict):
                    problems.append(f"messages.{i}.content.{j}.input: must be an object")
            if kind == "tool_result":
                if seen_other:
                    problems.append(f"messages.{i}.content.{j}: tool_result blocks must come first")
                if block.get("tool_use_id") not in tool_ids:
                    problems.append(f"messages.{i}.content.{j}: unknown tool_use_id")
            else:
                seen_other = True
            if kind == "image":
                source = block.get("source") or {}
                if source.get("type") == "base64":
                    if not source.get("media_type") or not source.get("data"):
                        problems.append(f"messages.{i}.content.{j}.source: base64 needs media_type and data")
                elif source.get("type") != "url" or not source.get("url"):
                    problems.append(f"messages.{i}.content.{j}.source: bad image source")
            if kind == "text" and not isinstance(block.get("text"), str):
                problems.append(f"messages.{i}.content.{j}.text: required")
            if kind == "thinking" and not block.get("signature"):
                problems.append(f"messages.{i}.content.{j}.signature: required on thinking blocks")
            if kind == "document" and not isinstance(block.get("source"), dict):
                problems.append(f"messages.{i}.content.{j}.source: required")
    for k, tool in enumerate(body.get("tools") or []):
        if not tool.get("name") or not isinstance(tool.get("input_schema"), dict):
            problems.append(f"tools.{k}: name and input_schema are required")
    choice = body.get("tool_choice")
    if choice is not None and choice.get("type") not in ("auto", "any", "tool", "none"):
        problems.append("tool_choice.type: invalid")
    thinking = body.get("thinking")
    if thinking is not None:
        budget = thinking.get("budget_tokens")
        if thinking.get("type") != "enabled" or not isinstance(budget, int) or budget < 1024:
            problems.append("thinking.budget_tokens: must be >= 1024")
        elif isinstance(max_tokens, int) and budget >= max_tokens:
            problems.append("thinking.budget_tokens: must be less than max_tokens")
        if "temperature" in body or "top_k" in body:
            problems.append("temperature/top_k: not compatible with thinking")
    return problems


class FakeAnthropicUpstream(ThreadedServer):
    """Answers like Anthropic: a text reply (mentioning images), a tool_use when tools are offered,
    thinking blocks when thinking is on, cache usage on request; `push` scripts failures."""

    def __init__(self, *, api_key: str = "sk-ant-fake") -> None:
        super().__init__()
        self.api_key = api_key
        self._lock = threading.Lock()
        self._queue: deque[Script] = deque()
        self.requests: list[Recorded] = []

    def push(self, *scripts: Script) -> None:
        with self._lock:
            self._queue.extend(scripts)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        return app

    @staticmethod
    def _error(status: int, etype: str, message: str) -> web.Response:
        body = {"type": "error", "error": {"type": etype, "message": message}}
        return web.json_response(body, status=status)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "invalid_request_error", "body is not JSON")
        record = Recorded(request.path, {k.lower(): v for k, v in request.headers.items()}, body)
        with self._lock:
            self.requests.append(record)
            script = self._queue.popleft() if self._queue else Script()
        if request.headers.get("x-api-key") != self.api_key:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if request.headers.get("anthropic-version") != "2023-06-01":
            return self._error(400, "invalid_request_error", "anthropic-version header is required")
        record.problems = validate(body)
        if record.problems:
            return self._error(400, "invalid_request_error", "; ".join(record.problems))
        if script.kind == "status":
            return self._error(script.status, script.error_type, script.message)
        content, usage, stop = self._answer(body, script)
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "msg_fake01",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": content,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": usage,
                }
            )
        return await self._stream(request, record, script, content, usage, stop)

    def _answer(
        self, body: dict[str, Any], script: Script
    ) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
        messages = body["messages"]
        last = messages[-1]
        blocks = (
            last["content"]
            if isinstance(last["content"], list)
            else [{"type": "text", "text": last["content"]}]
        )
        answered_tool = any(b.get("type") == "tool_result" for b in blocks)
        images = sum(
            1
            for m in messages
            if isinstance(m["content"], list)
            for b in m["content"]
            if b.get("type") == "image"
        )
        said = " ".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        content: list[dict[str, Any]] = []
        if body.get("thinking"):
            content.append(
                {
                    "type": "thinking",
                    "thinking": script.thinking or "Let me think step by step.",
                    "signature": "sig==",
                }
            )
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {"type": "auto"}
        wants_tool = (
            tools and choice["type"] != "none" and (not answered_tool or choice["type"] in ("any", "tool"))
        )
        if wants_tool:
            tool = tools[0]
            if choice["type"] == "tool":
                tool = next(t for t in tools if t["name"] == choice["name"])
            content.append(
                {
                    "type": "tool_use",
                    "id": "toolu_fake01",
                    "name": tool["name"],
                    "input": example(tool["input_schema"]),
                }
            )
            stop = "tool_use"
        else:
            text = script.content
            if text is None:
                text = (
                    GREETING
                    + (f" I see {images} image(s)." if images else "")
                    + (f" You said: {said}" if said else "")
                )
                if answered_tool:
                    text = (
                        GREETING
                        + " The tool said: "
                        + " ".join(str(b.get("content")) for b in blocks if b.get("type") == "tool_result")
                    )
            content.append({"type": "text", "text": text})
            stop = "end_turn"
        prompt_words = sum(
            _words(m["content"]) if isinstance(m["content"], str) else _words(json.dumps(m["content"]))
            for m in messages
        )
        if script.bill_whole_body:
            billed = {k: body[k] for k in ("system", "tools", "messages") if k in body}
            pages = sum(pdf_pages(m["content"]) for m in messages)
            prompt_words = _words(json.dumps(billed)) + pages * PDF_PAGE_TOKENS
        out_words = sum(
            _words(b.get("text") or b.get("thinking") or json.dumps(b.get("input"))) for b in content
        )
        usage = {
            "input_tokens": script.input_tokens if script.input_tokens is not None else prompt_words,
            "cache_creation_input_tokens": script.cache_creation,
            "cache_read_input_tokens": script.cache_read,
            "output_tokens": script.output_tokens if script.output_tokens is not None else out_words,
        }
        if script.usage is not None:
            usage = dict(script.usage)
        return content, usage, script.stop_reason or stop

    async def _stream(
        self,
        request: web.Request,
        record: Recorded,
        script: Script,
        content: list[dict[str, Any]],
        usage: dict[str, Any],
        stop: str,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        body = record.json

        async def send(event: str, data: dict[str, Any]) -> None:
            record.sent.append(event)
            await resp.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
            await asyncio.sleep(0)

        start_usage = usage if script.usage is not None else {**usage, "output_tokens": 1}
        await send(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake01",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        )
        if script.kind == "stream_error":
            await send(
                "error", {"type": "error", "error": {"type": script.error_type, "message": script.message}}
            )
            return resp
        for index, block in enumerate(content):
            kind = block["type"]
            if kind == "text":
                await send(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
                await send("ping", {"type": "ping"})
                words = block["text"].split(" ")
                for k, word in enumerate(words):
                    piece = word if k == 0 else " " + word
                    await send(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "text_delta", "text": piece},
                        },
                    )
                    if script.kind == "midstream_error" and k == 1:
                        await send(
                            "error",
                            {
                                "type": "error",
                                "error": {"type": script.error_type, "message": script.message},
                            },
                        )
                        return resp
            elif kind == "thinking":
                await send(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                    },
                )
                half = len(block["thinking"]) // 2
                for piece in (block["thinking"][:half], block["thinking"][half:]):
                    await send(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "thinking_delta", "thinking": piece},
                        },
                    )
                await send(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "signature_delta", "signature": "sig=="},
                    },
                )
            elif kind == "tool_use":
                head = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                await send(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": head},
                )
                raw = json.dumps(block["input"])
                for k in range(0, len(raw), 5):
                    await send(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": raw[k : k + 5]},
                        },
                    )
            await send("content_block_stop", {"type": "content_block_stop", "index": index})
        await send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": usage.get("output_tokens")},
            },
        )
        await send("message_stop", {"type": "message_stop"})
        return resp
