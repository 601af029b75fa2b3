"""`POST /api/v1/messages`: Anthropic's Messages API in front of the same routing, holds and billing.

The request is translated into the internal OpenAI-style chat request (routing, holds, estimates and
any provider whatever its wire format use that), and the customer's own body rides along in it: an
Anthropic-format endpoint is sent that body nearly as is and its answer is passed back (pass-through);
any other endpoint gets the translation, and its answer is written back as an Anthropic message or
event stream.
"""

from __future__ import annotations

from typing import Any

import orjson

from accounts.keys import KeyInfo
from routing.adapters.anthropic import EVENTS, MESSAGE
from routing.adapters.base import Completion, UpstreamFailure, Usage
from routing.adapters.tools import tool_use_from_call
from routing.gateway.front import Front
from routing.gateway.messages_request import body_prompt_bound, translate
from routing.gateway.run import Run
from routing.gateway.settlement import settle_before_reply
from routing.gateway.validate import validate_completion
from routing.gateway.wire import (
    Headers,
    authenticate,
    dumps,
    error_headers,
    header,
    key_from_secret,
    send_json,
)
from routing.gateway.writers import StreamWriter
from routing.request import Request
from routing.router import Candidate
from switchyard.errors import BadRequest, SwitchyardError
from switchyard.money import from_units, json_number

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
NATIVE_ANTHROPIC = {"end_turn", "stop_sequence", "max_tokens", "tool_use", "refusal", "pause_turn"}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


# ---- answer: internal -> Anthropic ----------------------------------------------------------------


def usage_json(usage: Usage, cost: int) -> dict[str, Any]:
    return {
        "input_tokens": max(usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens, 0),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cost": json_number(from_units(cost)),
    }


def stop_reason(finish: str | None, native: str | None = None) -> str:
    if native in NATIVE_ANTHROPIC:
        return native
    return STOP_REASONS.get(finish or "stop", "end_turn")


def content_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if message.get("reasoning"):
        blocks.append({"type": "thinking", "thinking": message["reasoning"], "signature": ""})
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content:
        blocks.append({"type": "text", "text": content})
    blocks.extend(tool_use_from_call(call) for call in message.get("tool_calls") or ())
    return blocks


class MessagesFront(Front):
    record_kind = "messages"

    async def authenticate(self, scope: dict[str, Any]) -> KeyInfo:
        secret = header(scope, b"x-api-key")
        if secret is None:
            return await authenticate(scope)
        return await key_from_secret(secret)

    def parse(self, body: Any) -> Request:
        """The translation, with the customer's own body riding along: an Anthropic-format endpoint
        is sent that (pass-through), any other the translation, so the hold covers whichever is larger."""
        internal, native = translate(body)
        return validate_completion(
            internal,
            kind="chat",
            passthrough=body,
            passthrough_bound=body_prompt_bound(body),
            native_only=native,
        )

    def admit(self, req: Request, candidates: list[Candidate]) -> list[Candidate]:
        """A request with blocks the internal format cannot carry goes only to Anthropic-format
        endpoints (pass-through); if the model has none, that is the request's fault: a 400."""
        where = req.native_only
        if where is None:
            return candidates
        native = [c for c in candidates if c.endpoint.api_format == "anthropic"]
        if not native:
            raise BadRequest(
                f"{where} can only be sent to an Anthropic-format endpoint, and this request has none "
                "(see the model's endpoints).",
                metadata={"field": where.split(":", 1)[0]},
            )
        return native

    async def send_error(self, send: Any, exc: SwitchyardError, extra: Headers | None = None) -> None:
        await send_json(send, exc.status, anthropic_error(exc.status, exc.message), error_headers(exc, extra))

    def whole_body(self, run: Run, result: Any, usage: Usage) -> dict[str, Any]:
        assert run.winner is not None and isinstance(result, Completion)
        completion = result
        cost = run.charge(run.winner.endpoint, usage)
        message = completion.extra.get(MESSAGE)
        if message is not None:
            # Pass-through: the provider's message, with our id (the generation's), our model name,
            # the provider's name and the cost added to its own usage.
            return {
                **message,
                "id": run.gen_id,
                "model": run.winner.model.slug,
                "provider": run.winner.endpoint.provider_name,
                "usage": {**(message.get("usage") or {}), "cost": json_number(from_units(cost))},
            }
        choice = completion.choices[0] if completion.choices else {}
        native = completion.native_finish_reason if run.winner.endpoint.api_format == "anthropic" else None
        return {
            "id": run.gen_id,
            "type": "message",
            "role": "assistant",
            "model": run.winner.model.slug,
            "provider": run.winner.endpoint.provider_name,
            "content": content_blocks(choice.get("message") or {}),
            "stop_reason": stop_reason(choice.get("finish_reason"), native),
            "stop_sequence": None,
            "usage": usage_json(usage, cost),
        }

    def stream_writer(self, run: Run, send: Any) -> StreamWriter:
        return MessagesStreamWriter(run, send)


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(data) + b"\n\n"


def sse_frame(name: str | None, data: bytes) -> bytes:
    """One server-sent event as received (its data lines as they were)."""
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"".join(b"data: " + line + b"\n" for line in data.split(b"\n")) + b"\n"


class MessagesStreamWriter(StreamWriter):
    """OpenAI chunks in, Anthropic's event sequence out: message_start, ping, one content block at a
    time (start, deltas, stop), message_delta with the stop reason and usage, message_stop.

    From an Anthropic-format endpoint the chunks carry the provider's own events (pass-through): those
    go out as received, except message_start (our id and model name) and message_delta (the cost
    added to its usage); message_stop is held back until the request is settled."""

    def __init__(self, run: Run, send: Any) -> None:
        super().__init__(run, send)
        self.passthrough = False
        self.last = b""  # pass-through: the provider's message_stop, sent after settlement
        self.opened = False
        self.block: tuple[str, int] | None = None  # (kind, OpenAI tool index or 0)
        self.block_index = -1
        self.tool_blocks: dict[int, int] = {}
        self.finish_reason: str | None = None

    def _open(self, cand: Candidate) -> list[bytes]:
        if self.opened:
            return []
        self.opened = True
        message: dict[str, Any] = {
            "id": self.run.gen_id,
            "type": "message",
            "role": "assistant",
            "model": cand.model.slug,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [
            sse_event("message_start", {"type": "message_start", "message": message}),
            sse_event("ping", {"type": "ping"}),
        ]

    def _close_block(self) -> list[bytes]:
        if self.block is None:
            return []
        self.block = None
        return [sse_event("content_block_stop", {"type": "content_block_stop", "index": self.block_index})]

    def _start_block(self, kind: str, key: int, block: dict[str, Any]) -> list[bytes]:
        out = self._close_block()
        self.block_index += 1
        self.block = (kind, key)
        out.append(
            sse_event(
                "content_block_start",
                {"type": "content_block_start", "index": self.block_index, "content_block": block},
            )
        )
        return out

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return sse_event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def _own(self, cand: Candidate, name: str | None, data: bytes) -> bytes:
        """A provider's event with the fields Switchyard owns rewritten."""
        if name not in ("message_start", "message_delta"):
            return data
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return data
        if name == "message_start" and isinstance(payload.get("message"), dict):
            payload["message"] = {**payload["message"], "id": self.run.gen_id, "model": cand.model.slug}
        elif name == "message_delta":
            usage = self.run.final_usage()
            cost = json_number(from_units(self.run.charge(cand.endpoint, usage)))
            payload["usage"] = {**(payload.get("usage") or {}), "cost": cost}
        return dumps(payload)

    async def _pass_on(self, cand: Candidate, events: list[tuple[str | None, bytes]]) -> None:
        out = []
        for name, data in events:
            if name == "message_stop":
                self.last = sse_frame(name, data)
            else:
                out.append(sse_frame(name, self._own(cand, name, data)))
        if out:
            await self.raw(b"".join(out))

    async def chunk(self, cand: Candidate, payload: dict[str, Any]) -> None:
        events = payload.get(EVENTS)
        if events is not None:
            self.passthrough = True
            if events:
                await self._pass_on(cand, events)
            return
        out = self._open(cand)
        for choice in payload.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("reasoning"):
                if self.block is None or self.block[0] != "thinking":
                    out += self._start_block(
                        "thinking", 0, {"type": "thinking", "thinking": "", "signature": ""}
                    )
                out.append(
                    self._delta(self.block_index, {"type": "thinking_delta", "thinking": delta["reasoning"]})
                )
            if delta.get("content"):
                if self.block is None or self.block[0] != "text":
                    out += self._start_block("text", 0, {"type": "text", "text": ""})
                out.append(self._delta(self.block_index, {"type": "text_delta", "text": delta["content"]}))
            for call in delta.get("tool_calls") or ():
                index = call.get("index", 0)
                fn = call.get("function") or {}
                if index not in self.tool_blocks:
                    head: dict[str, Any] = {
                        "type": "tool_use",
                        "id": call.get("id") or "",
                        "name": fn.get("name") or "",
                        "input": {},
                    }
                    out += self._start_block("tool", index, head)
                    self.tool_blocks[index] = self.block_index
                if fn.get("arguments"):
                    out.append(
                        self._delta(
                            self.tool_blocks[index],
                            {"type": "input_json_delta", "partial_json": fn["arguments"]},
                        )
                    )
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        if out:
            await self.raw(b"".join(out))

    async def finish(self, cand: Candidate) -> None:
        run = self.run
        usage = run.final_usage()
        run.usage = usage
        if self.passthrough:
            await self.end(self.last)
            return
        out = self._open(cand) + self._close_block()
        delta = {"stop_reason": stop_reason(self.finish_reason), "stop_sequence": None}
        out.append(
            sse_event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": delta,
                    "usage": usage_json(usage, run.charge(cand.endpoint, usage)),
                },
            )
        )
        out.append(sse_event("message_stop", {"type": "message_stop"}))
        await self.end(b"".join(out))

    async def fail(self, cand: Candidate, failure: UpstreamFailure) -> None:
        await self.end(sse_event("error", anthropic_error(failure.status, failure.message)))

    async def fail_all(self, exc: SwitchyardError) -> None:
        await self.end(sse_event("error", anthropic_error(exc.status, exc.message)))

    async def end(self, last: bytes = b"") -> None:
        """The last bytes go out once the request is settled (as on /chat/completions), so a client
        that has read the whole stream never finds its credit still held."""
        await self.start()
        await settle_before_reply(self.run)
        await self.send({"type": "http.response.body", "body": last, "more_body": False})


MESSAGES = MessagesFront("/api/v1/messages", "chat")
