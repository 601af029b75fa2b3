"""Anthropic Messages wire format: OpenAI-style requests to `POST /messages` and answers back to OpenAI
pieces; and pass-through of a customer's own Anthropic request (from the `/messages` front door)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson

from routing.adapters.base import (
    Adapter,
    CallContext,
    Completion,
    StreamTranslator,
    UpstreamFailure,
    Usage,
    provider_usage,
    usage_fields,
)
from routing.adapters.caching import tools_without_cache_control, without_cache_control
from routing.adapters.openai import forwardable
from routing.adapters.reasoning import MIN_THINKING_BUDGET, ReasoningStripped, thinking_budget
from routing.adapters.tools import (
    call_from_tool_use,
    tool_choice_to_anthropic,
    tool_from_function,
    tool_use_from_call,
)
from routing.catalog.parameters import ANTHROPIC_PARAMETER
from routing.catalog.snapshot import EndpointInfo
from routing.gateway.tokens import count_text
from routing.request import Request

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Pass-through: the internal request carries the customer's own /messages body (Request.passthrough);
# this adapter then sends that body (see passthrough_body) rather than a translation, keeps the
# provider's answer on the Completion (extra[MESSAGE]), and tags stream items with the provider's own
# events (EVENTS) for the /messages front door to pass on.
MESSAGE = "anthropic_message"
EVENTS = "_anthropic_events"
# Never sent upstream: Switchyard's own fields, and `service_tier` (a priority tier is billed at other
# prices than the catalog's).
NOT_FORWARDED = frozenset({"models", "provider", "usage", "transforms", "route", "plugins", "service_tier"})


# ---- request: OpenAI -> Anthropic -----------------------------------------------------------------


def parse_data_uri(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:<type>;base64,<data>` URI, else None."""
    if not url.startswith("data:"):
        return None
    head, sep, data = url[5:].partition(",")
    if not sep or not head.endswith(";base64"):
        return None
    return head[: -len(";base64")] or "application/octet-stream", data


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = str(image.get("url") if isinstance(image, dict) else image)
    inline = parse_data_uri(url)
    if inline is not None:
        source: dict[str, Any] = {"type": "base64", "media_type": inline[0], "data": inline[1]}
    else:
        source = {"type": "url", "url": url}
    return {"type": "image", "source": source}


def _blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI message content as Anthropic content blocks (cache_control passed through)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            block: dict[str, Any] = {"type": "text", "text": part["text"]}
        elif kind == "image_url":
            block = _image_block(part)
        else:
            raise UpstreamFailure(
                400,
                f"Content part type {kind!r} is not supported by Anthropic models.",
                retriable=True,
                kind="unsupported",
            )
        if part.get("cache_control"):
            block["cache_control"] = part["cache_control"]
        out.append(block)
    return out


def _tool_result(m: dict[str, Any]) -> dict[str, Any]:
    content = m.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m["tool_call_id"]}
    if isinstance(content, list):
        block["content"] = _blocks(content)
    else:
        block["content"] = content or ""
    return block


def convert_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, messages): system/developer lift out, tool results ride in user turns, and
    consecutive turns of one role merge (Anthropic wants user and assistant to alternate)."""
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m["role"]
        if role in ("system", "developer"):
            system.extend(_blocks(m.get("content")))
            continue
        if role in ("tool", "function"):
            if role == "function":
                m = {**m, "tool_call_id": m.get("name") or ""}
            turn_role, blocks = "user", [_tool_result(m)]
        elif role == "assistant":
            turn_role, blocks = "assistant", _blocks(m.get("content"))
            blocks.extend(tool_use_from_call(call) for call in m.get("tool_calls") or [])
        else:
            turn_role, blocks = "user", _blocks(m.get("content"))
        if not blocks:
            continue
        if out and out[-1]["role"] == turn_role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": turn_role, "content": blocks})
    for turn in out:  # tool results must come first in their user turn
        if turn["role"] == "user":
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    return system, out


def build_body(
    req: Request,
    *,
    model: str,
    supported: frozenset[str],
    max_default: int | None,
    caching: bool = True,
) -> dict[str, Any]:
    """The Anthropic request body for an OpenAI-style chat request (only the parameters the endpoint
    takes; `cache_control` only when the endpoint takes explicit caching)."""
    messages = req.messages or []
    strip = not caching and req.cache_control
    messages_in = without_cache_control(messages) if strip else messages
    system, messages = convert_messages(messages_in)
    max_tokens = int(req.max_tokens or max_default or DEFAULT_MAX_TOKENS)
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages}
    if system:
        if all(set(b) == {"type", "text"} for b in system):
            body["system"] = "\n\n".join(b["text"] for b in system)
        else:
            body["system"] = system
    params = forwardable(req, supported)
    for name in ("temperature", "top_p", "top_k"):
        if params.get(name) is not None:
            body[name] = params[name]
    stop = params.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if params.get("tools"):
        tools = tools_without_cache_control(params["tools"]) if strip else params["tools"]
        body["tools"] = [tool_from_function(tool) for tool in tools]
        choice = tool_choice_to_anthropic(params.get("tool_choice"), params.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    if req.user:
        body["metadata"] = {"user_id": str(req.user)[:256]}
    if not supported or "reasoning" in supported:
        budget = thinking_budget(req.reasoning, max_tokens)
        # Anthropic wants MIN_THINKING_BUDGET <= budget_tokens < max_tokens: with room for less than
        # that, the request runs without extended thinking rather than being refused upstream.
        if budget is not None and max_tokens > MIN_THINKING_BUDGET:
            body["thinking"] = {"type": "enabled", "budget_tokens": min(budget, max_tokens - 1)}
            # Anthropic refuses sampling changes alongside extended thinking.
            for name in ("temperature", "top_p", "top_k"):
                body.pop(name, None)
    return body


def passthrough_body(raw: dict[str, Any], ep: EndpointInfo, *, stream: bool) -> dict[str, Any]:
    """The customer's own Anthropic request for this endpoint: its model id, Switchyard's fields
    removed, parameters the endpoint does not list dropped, `cache_control` only where it is taken;
    everything else (thinking blocks with signatures, documents, citations, metadata, ...) as sent."""
    supported = ep.supported_parameters
    body = {
        k: v
        for k, v in raw.items()
        if k not in NOT_FORWARDED
        and (not supported or k not in ANTHROPIC_PARAMETER or ANTHROPIC_PARAMETER[k] in supported)
    }
    body["model"] = ep.provider_model_id
    if stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
    if not ep.explicit_caching:
        body.pop("cache_control", None)
        if isinstance(body.get("messages"), list):
            body["messages"] = without_cache_control(body["messages"])
        if isinstance(body.get("system"), list):
            body["system"] = tools_without_cache_control(body["system"])
        if isinstance(body.get("tools"), list):
            body["tools"] = tools_without_cache_control(body["tools"])
    return body


# ---- response: Anthropic -> OpenAI ----------------------------------------------------------------


def usage_from_anthropic(u: Any, thinking: str = "") -> Usage | None:
    if not u:
        return None
    u = usage_fields(u)
    cache_read, cache_write = u.get("cache_read_input_tokens"), u.get("cache_creation_input_tokens")
    # Anthropic does not count thinking apart: the part of the output it took, by our tokenizer
    # (provider_usage keeps it within the output).
    return provider_usage(
        "anthropic",
        u,
        prompt=u.get("input_tokens"),
        completion=u.get("output_tokens"),
        cached=cache_read,
        cache_write=cache_write,
        reasoning=count_text(thinking) if thinking else 0,
        extra_prompt=(cache_read, cache_write),
    )


def parse_message(data: dict[str, Any], *, exclude_reasoning: bool = False) -> Completion:
    if data.get("type") == "error":
        err = data.get("error") or {}
        raise UpstreamFailure(502, str(err.get("message", "provider error")), retriable=True)
    text: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in data["content"]:
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text") or "")
        elif kind == "thinking":
            thinking.append(block.get("thinking") or "")
        elif kind == "tool_use":
            calls.append(call_from_tool_use(block))
    native = data.get("stop_reason")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    if thinking and not exclude_reasoning:
        message["reasoning"] = "".join(thinking)
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": STOP_REASONS.get(native or "", "stop"),
    }
    return Completion(
        choices=[choice],
        usage=usage_from_anthropic(data.get("usage"), "".join(thinking)),
        native_finish_reason=native,
    )


class AnthropicAdapter(ReasoningStripped):
    def build_request(
        self, ctx: CallContext, req: Request, *, stream: bool
    ) -> tuple[str, dict[str, str], bytes]:
        ep = ctx.endpoint
        if req.kind != "chat":
            raise UpstreamFailure(
                400, "Anthropic models only serve chat requests.", retriable=True, kind="unsupported"
            )
        raw = req.passthrough
        if raw is not None:
            body = passthrough_body(raw, ep, stream=stream)
        else:
            body = build_body(
                req,
                model=ep.provider_model_id,
                supported=ep.supported_parameters,
                max_default=ep.max_completion_tokens,
                caching=ep.explicit_caching,
            )
            if stream:
                body["stream"] = True
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            "anthropic-version": API_VERSION,
        }
        if ctx.api_key:
            headers["x-api-key"] = ctx.api_key
        return ep.base_url.rstrip("/") + "/messages", headers, orjson.dumps(body)

    def parse_response(self, data: dict[str, Any]) -> Completion:
        completion = parse_message(data)
        completion.extra[MESSAGE] = data  # what pass-through answers with
        return completion

    def stream_events(self) -> StreamTranslator:
        return AnthropicStream()

    async def stream(self, ctx: CallContext, req: Request) -> AsyncGenerator[dict[str, Any] | Usage, None]:
        if req.passthrough is not None:
            # The same HTTP and deadline machinery, with a translator that keeps the provider's events.
            async for item in Adapter.stream(_PASSTHROUGH, ctx, req):
                yield item
            return
        async for item in super().stream(ctx, req):  # (reasoning stripped when excluded)
            yield item


class AnthropicStream(StreamTranslator):
    """message_start, content_block_start/delta/stop, message_delta, message_stop -> OpenAI chunks."""

    def __init__(self) -> None:
        super().__init__()
        self.usage: dict[str, Any] = {}
        self.started = False
        self.tool_index = -1
        self.block_tool: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index
        self.thinking: list[str] = []
        self.tool_seen = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any] | Usage]:
        out: list[dict[str, Any] | Usage] = []
        if not self.started:
            # The role goes out with the first real content, so a stream that fails before any can fail over.
            self.started = True
            out.append(
                {
                    "choices": [
                        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                    ]
                }
            )
        out.append({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        return out

    def on_event(self, event: str | None, data: bytes) -> list[dict[str, Any] | Usage]:
        payload = self.load(data)
        if not isinstance(payload, dict):
            raise UpstreamFailure(
                502, "The provider sent a malformed stream event.", retriable=True, kind="malformed"
            )
        kind = payload.get("type") or event
        if kind == "message_start":
            self.usage.update(usage_fields(usage_fields(payload.get("message")).get("usage")))
            return []
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") == "tool_use":
                self.tool_index += 1
                self.tool_seen = True
                self.block_tool[payload.get("index", 0)] = self.tool_index
                head = {
                    "index": self.tool_index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return self._chunk({"tool_calls": [head]})
            if block.get("type") == "text" and block.get("text"):
                return self._chunk({"content": block["text"]})
            return []
        if kind == "content_block_delta":
            delta = payload.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if dtype == "input_json_delta":
                index = self.block_tool.get(payload.get("index", 0), max(self.tool_index, 0))
                piece = {"index": index, "function": {"arguments": delta.get("partial_json", "")}}
                return self._chunk({"tool_calls": [piece]})
            if dtype == "thinking_delta":
                self.thinking.append(delta.get("thinking", ""))
                return self._chunk({"reasoning": delta.get("thinking", "")})
            return []  # signature_delta, citations_delta: nothing to say in OpenAI terms
        if kind == "message_delta":
            self.usage.update({k: v for k, v in usage_fields(payload.get("usage")).items() if v is not None})
            reason = (payload.get("delta") or {}).get("stop_reason")
            if reason:
                return self._chunk({}, STOP_REASONS.get(reason, "stop"))
            return []
        if kind == "message_stop":
            self.done = True
            usage = usage_from_anthropic(self.usage, "".join(self.thinking))
            return [usage] if usage is not None else []
        if kind == "error":
            err = payload.get("error") or {}
            etype = err.get("type", "api_error")
            message = err.get("message", "provider error")
            raise UpstreamFailure(
                502,
                f"Provider error mid-stream ({etype}): {message}",
                retriable=etype in ("overloaded_error", "api_error", "rate_limit_error"),
                kind="rate_limited" if etype == "rate_limit_error" else "stream_error",
            )
        return []  # ping and unknown future events


class AnthropicPassthroughStream(AnthropicStream):
    """The translation above, plus the provider's own events, each (event name, data bytes), under
    EVENTS on the items: the first translated chunk of an event carries them, an event that
    translates to nothing rides on an empty chunk. Events before the first content (message_start,
    ping, an empty block start) are held back with it, so a provider that fails before saying anything
    can still be failed over, as on the translation path."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[str | None, bytes]] = []
        self.usage_sent = False

    def on_event(self, event: str | None, data: bytes) -> list[dict[str, Any] | Usage]:
        items = super().on_event(event, data)
        self.held.append((event, data))
        kind = event or str(orjson.loads(data).get("type") or "")  # Anthropic always names its events
        if kind == "message_delta":
            # The usage goes in first, so the /messages writer can put the cost in this event.
            usage = usage_from_anthropic(self.usage, "".join(self.thinking))
            if usage is not None:
                items.insert(0, usage)
                self.usage_sent = True
        elif kind == "message_stop" and self.usage_sent:
            items = [i for i in items if not isinstance(i, Usage)]
        if not self.started and kind != "message_stop":
            return items  # nothing real yet: hold the events back
        events, self.held = self.held, []
        chunks = [i for i in items if isinstance(i, dict)]
        if not chunks:
            items.append({"choices": [], EVENTS: events})
            return items
        for n, chunk in enumerate(chunks):
            chunk[EVENTS] = events if n == 0 else []
        return items


class _PassthroughAdapter(AnthropicAdapter):
    def stream_events(self) -> StreamTranslator:
        return AnthropicPassthroughStream()


_PASSTHROUGH = _PassthroughAdapter()
