"""Fake OpenAI-format upstream (chat, completions, embeddings, models) with scriptable failure behaviours."""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import hashlib
import json
import math
import random
import re
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import httpx
from aiohttp import web

from tests.fakes.base import (
    ThreadedServer,
    drop_connection,
    serve_forever,
    shutdown_event,
)

DEFAULT_MODELS: tuple[str, ...] = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "fake-model",
)
DEFAULT_TOOL_ARGUMENTS = '{"location": "Paris"}'
DEFAULT_EMBEDDING_DIMS = 8
GREETING = "Hello from fake-openai."

BehaviourKind = Literal[
    "ok",
    "status",
    "hang",
    "hang_after_headers",
    "drip",
    "malformed",
    "drop",
    "drop_mid_stream",
    "garbage",
    "garbage_raw",
    "error_in_body",
]
BEHAVIOUR_KINDS: frozenset[str] = frozenset(get_args(BehaviourKind))

_DEFAULT_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_DEFAULT_ERROR_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}
_DEFAULT_ERROR_MESSAGES = {
    400: "Invalid request (fake upstream).",
    401: "Incorrect API key provided",
    403: "You are not allowed to sample from this model",
    404: "The model does not exist or you do not have access to it.",
    429: "Rate limit reached for requests",
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
}


@dataclass(frozen=True)
class Behaviour:
    """What the fake does with one completion/embedding request.

    `kind` selects the behaviour; the other fields are options, each used only by the kinds noted.
    """

    kind: BehaviourKind = "ok"
    # ok (and the body that drip / drop_mid_stream / hang_after_headers send or start sending)
    content: str | None = None
    # "auto" = computed from words of the message text; "body" = words of everything a real provider
    # bills as prompt (messages, tools, response_format); a dict is returned verbatim; None omits usage.
    usage: dict[str, Any] | Literal["auto", "body"] | None = "auto"
    tool_call: bool | None = None  # None: tool call iff request has tools and tool_choice != "none"
    tool_arguments: str | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    chunk_delay_ms: float = 0
    # every kind: wait this long before doing anything (before headers)
    latency_ms: float = 0
    # status
    status: int = 500
    message: str | None = None
    error_type: str | None = None
    code: str | None = None
    retry_after: str | int | float | None = None
    # drip
    interval_ms: float = 50
    # drop_mid_stream, error_in_body (streamed: this many chunks before the error event)
    after_chunks: int = 2
    # garbage / garbage_raw
    size: int = 256

    def __post_init__(self) -> None:
        if self.kind not in BEHAVIOUR_KINDS:
            raise ValueError(
                f"unknown fake behaviour {self.kind!r}; expected one of {sorted(BEHAVIOUR_KINDS)}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Behaviour:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown behaviour option(s): {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def parse(cls, spec: str) -> Behaviour:
        """Parse `name[:key=value,...]`, e.g. `fail_500`, `status:status=429,retry_after=2`, `drip:interval_ms=10`.

        Aliases: `fail_<code>` / `status_<code>` → status with that code; `tool_call` → ok with a tool call.
        """
        name, _, raw_options = spec.partition(":")
        options: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in raw_options.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"behaviour option {item!r} must be key=value")
            options[key.strip()] = _coerce(value.strip())
        match = re.fullmatch(r"(?:fail|status)_(\d{3})", name)
        if match:
            return cls.from_dict({"kind": "status", "status": int(match.group(1)), **options})
        if name == "tool_call":
            return cls.from_dict({"kind": "ok", "tool_call": True, **options})
        return cls.from_dict({"kind": name, **options})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: str) -> Any:
    """Turn a model-suffix option string into the JSON-ish value it spells."""
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            pass
    return value


def as_behaviour(value: Behaviour | str | dict[str, Any]) -> Behaviour:
    if isinstance(value, Behaviour):
        return value
    if isinstance(value, str):
        return Behaviour.parse(value)
    return Behaviour.from_dict(value)


@dataclass
class RecordedRequest:
    """One request the fake received (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    text: str
    behaviour: str | None = None  # kind applied, None when not an inference request or rejected early
    # How the exchange ended, for inference requests: "complete" (the whole answer was written),
    # "client_closed" (the client hung up before the answer was complete), or None (still running,
    # or an error/failure behaviour that ends on its own terms).
    outcome: str | None = None
    received_at: float = field(default_factory=time.time)

    @property
    def model(self) -> str | None:
        return self.json.get("model") if isinstance(self.json, dict) else None

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Reject(Exception):
    """Raised inside request handling to answer immediately with an OpenAI-shaped error."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def error_response(
    status: int,
    message: str,
    error_type: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


# ---------------------------------------------------------------------------------------------------------
# Deterministic content / token helpers
# ---------------------------------------------------------------------------------------------------------


def count_words(text: str) -> int:
    return len(text.split())


def word_pieces(text: str) -> list[str]:
    """Split text into one piece per word, keeping the whitespace so the pieces concatenate back exactly."""
    pieces = re.findall(r"\s*\S+", text)
    tail = text[len("".join(pieces)) :]
    if tail:
        if pieces:
            pieces[-1] += tail
        else:
            pieces = [tail]
    return pieces


def content_text(content: Any) -> str:
    """Text of a message `content`: a string, or a list of parts of which the text parts count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text", "") for part in content if isinstance(part, dict)]
        return " ".join(t for t in texts if isinstance(t, str))
    return ""


def default_reply(source_text: str) -> str:
    words = source_text.split()[:8]
    return f"{GREETING} You said: {' '.join(words)}" if words else GREETING


def example_from_schema(schema: Any, depth: int = 0) -> Any:
    """A small value that satisfies simple JSON schemas, so json_schema responses look plausible."""
    if not isinstance(schema, dict) or depth > 8:
        return "42"
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        if schema.get(combinator):
            return example_from_schema(schema[combinator][0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        return {key: example_from_schema(sub, depth + 1) for key, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [example_from_schema(schema.get("items", {}), depth + 1)]
    return {"integer": 42, "number": 42, "boolean": True, "null": None}.get(str(kind), "42")


def embedding_vector(item: Any, dims: int) -> list[float]:
    """A unit vector derived from a hash of the input, so equal inputs embed identically."""
    seed = hashlib.sha256(json.dumps(item, sort_keys=True).encode()).digest()
    raw = []
    for i in range(dims):
        digest = hashlib.sha256(seed + i.to_bytes(4, "little")).digest()
        raw.append(int.from_bytes(digest[:8], "little") / 2**64 * 2 - 1)
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _max_tokens(body: dict[str, Any]) -> int | None:
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0 else None


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


@dataclass
class _Rendered:
    """A successful answer: SSE events when streaming, else a single JSON body."""

    stream: bool
    parts: list[bytes]


# ---------------------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------------------


class FakeOpenAIUpstream(ThreadedServer):
    """An OpenAI-compatible HTTP server on 127.0.0.1 whose answers tests can script.

    Behaviours come from the request's model suffix (`model@fail_500`, which does not consume the queue),
    else from the FIFO (`push`), else from the default (`set_default`, initially "ok").
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: Sequence[str] = DEFAULT_MODELS,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.api_key = api_key
        self.models = list(models)
        self._lock = threading.Lock()
        self._queue: deque[Behaviour] = deque()
        self._default = Behaviour()
        self._requests: list[RecordedRequest] = []

    # -- scripting API (thread-safe; the handlers run on the server thread) ----------------------------

    def push(self, *behaviours: Behaviour | str | dict[str, Any], times: int = 1) -> None:
        """Queue behaviours for the next requests, each repeated `times` times."""
        parsed = [as_behaviour(b) for b in behaviours]
        with self._lock:
            for behaviour in parsed:
                self._queue.extend([behaviour] * times)

    def set_default(self, behaviour: Behaviour | str | dict[str, Any]) -> None:
        parsed = as_behaviour(behaviour)
        with self._lock:
            self._default = parsed

    def reset(self) -> None:
        """Empty the queue, restore the "ok" default and forget recorded requests."""
        with self._lock:
            self._queue.clear()
            self._default = Behaviour()
            self._requests.clear()

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def pending(self) -> list[Behaviour]:
        with self._lock:
            return list(self._queue)

    @property
    def default(self) -> Behaviour:
        with self._lock:
            return self._default

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every non-control request received so far, oldest first (a snapshot)."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise AssertionError("the fake OpenAI upstream has received no requests")
            return self._requests[-1]

    def _next_behaviour(self, model: str) -> tuple[Behaviour, str]:
        base, sep, suffix = model.rpartition("@")
        if sep and base:
            try:
                return Behaviour.parse(suffix), base
            except (TypeError, ValueError) as exc:
                raise _Reject(
                    error_response(
                        400,
                        f"Bad fake behaviour suffix in model {model!r}: {exc}",
                        "invalid_request_error",
                        param="model",
                    )
                )
        with self._lock:
            return (self._queue.popleft() if self._queue else self._default), model

    # -- app --------------------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/v1/models/{model:.+}", self._get_model)
        app.router.add_post("/_control/push", self._control_push)
        app.router.add_post("/_control/default", self._control_default)
        app.router.add_post("/_control/reset", self._control_reset)
        app.router.add_get("/_control/requests", self._control_requests)
        app.router.add_get("/_control/state", self._control_state)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _record(self, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        text = raw.decode("utf-8", errors="replace")
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={name.lower(): value for name, value in request.headers.items()},
            json=parsed,
            text=text,
        )
        with self._lock:
            self._requests.append(recorded)
        return recorded

    def _check_auth(self, request: web.Request) -> None:
        match = re.fullmatch(r"Bearer\s+(\S+)\s*", request.headers.get("Authorization", ""))
        if match is None:
            raise _Reject(
                error_response(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an Authorization header "
                    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    "invalid_request_error",
                )
            )
        if self.api_key is not None and match.group(1) != self.api_key:
            raise _Reject(
                error_response(
                    401, "Incorrect API key provided", "invalid_request_error", code="invalid_api_key"
                )
            )

    # -- inference endpoints ----------------------------------------------------------------------------

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._inference(request, "chat", "messages")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._inference(request, "completions", "prompt")

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._inference(request, "embeddings", "input")

    async def _inference(self, request: web.Request, endpoint: str, required: str) -> web.StreamResponse:
        recorded = await self._record(request)
        try:
            self._check_auth(request)
            body = recorded.json
            if not isinstance(body, dict):
                raise _Reject(
                    error_response(
                        400,
                        "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                        "using your HTTP library correctly.)",
                        "invalid_request_error",
                    )
                )
            model = body.get("model")
            if not isinstance(model, str) or not model:
                raise _Reject(
                    error_response(400, "you must provide a model parameter", "invalid_request_error")
                )
            if body.get(required) in (None, [], ""):
                raise _Reject(
                    error_response(
                        400,
                        f"Missing required parameter: '{required}'.",
                        "invalid_request_error",
                        code="missing_required_parameter",
                        param=required,
                    )
                )
            behaviour, model = self._next_behaviour(model)
            recorded.behaviour = behaviour.kind
            return await self._apply(request, endpoint, body, model, behaviour, recorded)
        except _Reject as reject:
            return reject.response

    async def _pause(self, request: web.Request, recorded: RecordedRequest, seconds: float | None) -> bool:
        """Sleep `seconds` (None: until the server stops). True when the caller should give up: the
        server is stopping, or the client hung up (then recorded as `outcome="client_closed"`)."""
        stopping = shutdown_event(request.app)
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + max(seconds, 0)
        while True:
            transport = request.transport
            if transport is None or transport.is_closing():
                self._set_outcome(recorded, "client_closed")
                return True
            if stopping.is_set():
                return True
            step = 0.02 if deadline is None else min(0.02, deadline - loop.time())
            if step <= 0:
                return False
            try:
                await asyncio.wait_for(stopping.wait(), timeout=step)
            except TimeoutError:
                pass

    def _set_outcome(self, recorded: RecordedRequest, outcome: str) -> None:
        with self._lock:
            if recorded.outcome is None:
                recorded.outcome = outcome

    async def _write(self, response: web.StreamResponse, recorded: RecordedRequest, data: bytes) -> bool:
        if await _write_quietly(response, data):
            return True
        self._set_outcome(recorded, "client_closed")
        return False

    async def _apply(
        self,
        request: web.Request,
        endpoint: str,
        body: dict[str, Any],
        model: str,
        behaviour: Behaviour,
        recorded: RecordedRequest,
    ) -> web.StreamResponse:
        if await self._pause(request, recorded, behaviour.latency_ms / 1000):
            drop_connection(request)
            return web.Response()
        stream = endpoint != "embeddings" and body.get("stream") is True
        kind = behaviour.kind

        if kind == "status":
            return self._status_error(behaviour)
        if kind == "drop":
            drop_connection(request)
            return web.Response()
        if kind == "hang":
            await self._pause(request, recorded, None)
            drop_connection(request)
            return web.Response()
        if kind == "garbage":
            return web.Response(
                body=random.Random(behaviour.size).randbytes(behaviour.size), content_type="text/plain"
            )
        if kind == "garbage_raw":
            # No status line at all: the client's HTTP parser should fail.
            if request.transport is not None:
                request.transport.write(
                    b"\x00\xff\x13garbage-not-http\r\n" + random.Random(1).randbytes(behaviour.size)
                )
            drop_connection(request)
            return web.Response()
        if kind == "malformed":
            if stream:
                response = await self._start_stream(request, True)
                await _write_quietly(response, b"data: {not json\n\n" + _sse("[DONE]"))
                return response
            return web.Response(body=b'{"choices": [', content_type="application/json")

        rendered = self._render(endpoint, body, model, behaviour, stream)
        if kind == "ok":
            if not rendered.stream:
                return web.Response(
                    body=rendered.parts[0], content_type="application/json", headers=_headers()
                )
            response = await self._start_stream(request, True)
            for index, part in enumerate(rendered.parts):
                if index and await self._pause(request, recorded, behaviour.chunk_delay_ms / 1000):
                    drop_connection(request)
                    return response
                if not await self._write(response, recorded, part):
                    return response
            self._set_outcome(recorded, "complete")
            return response
        if kind == "hang_after_headers":
            await self._start_stream(request, rendered.stream)
            await self._pause(request, recorded, None)
            drop_connection(request)
            return web.Response()
        if kind == "drip":
            payload = b"".join(rendered.parts)
            response = await self._start_stream(
                request, rendered.stream, None if rendered.stream else len(payload)
            )
            for index in range(len(payload)):
                if index and await self._pause(request, recorded, behaviour.interval_ms / 1000):
                    drop_connection(request)
                    return response
                if not await self._write(response, recorded, payload[index : index + 1]):
                    return response
            self._set_outcome(recorded, "complete")
            return response
        if kind == "error_in_body":
            # HTTP 200 whose body is an error, as OpenAI does when a stream fails server-side: an
            # `error` event after some chunks, or (not streamed) a 200 JSON error object.
            error = {
                "error": {
                    "message": behaviour.message or "The server had an error processing your request.",
                    "type": behaviour.error_type or "server_error",
                    "param": None,
                    "code": behaviour.code,
                }
            }
            if not rendered.stream:
                return web.json_response(error, headers=_headers())
            response = await self._start_stream(request, True)
            for part in rendered.parts[: behaviour.after_chunks]:
                await self._write(response, recorded, part)
            await self._write(response, recorded, _sse(error))
            return response
        if kind == "drop_mid_stream":
            if rendered.stream:
                response = await self._start_stream(request, True)
                for part in rendered.parts[: behaviour.after_chunks]:
                    await _write_quietly(response, part)
            else:
                # Promise the whole body, deliver half: the client sees a truncated response.
                payload = rendered.parts[0]
                response = await self._start_stream(request, False, len(payload))
                await _write_quietly(response, payload[: len(payload) // 2])
            drop_connection(request)
            return response
        raise AssertionError(f"unhandled behaviour {kind}")

    @staticmethod
    def _status_error(behaviour: Behaviour) -> web.Response:
        status = behaviour.status
        headers = {} if behaviour.retry_after is None else {"retry-after": str(behaviour.retry_after)}
        return error_response(
            status,
            behaviour.message or _DEFAULT_ERROR_MESSAGES.get(status, f"Fake upstream error {status}."),
            behaviour.error_type
            or _DEFAULT_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            code=behaviour.code if behaviour.code is not None else _DEFAULT_ERROR_CODES.get(status),
            headers=headers,
        )

    @staticmethod
    async def _start_stream(
        request: web.Request, sse: bool, content_length: int | None = None
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers=_headers())
        if sse:
            response.content_type = "text/event-stream"
            response.headers["cache-control"] = "no-cache"
        else:
            response.content_type = "application/json"
        if content_length is not None:
            response.content_length = content_length
        try:
            await response.prepare(request)
        except ConnectionError:
            pass
        return response

    # -- rendering successful answers -------------------------------------------------------------------

    def _render(
        self, endpoint: str, body: dict[str, Any], model: str, behaviour: Behaviour, stream: bool
    ) -> _Rendered:
        if endpoint == "chat":
            return self._render_chat(body, model, behaviour, stream)
        if endpoint == "completions":
            return self._render_completion(body, model, behaviour, stream)
        return self._render_embeddings(body, model, behaviour)

    @staticmethod
    def _usage(behaviour: Behaviour, prompt: int, completion: int, details: bool) -> dict[str, Any] | None:
        if behaviour.usage is None or isinstance(behaviour.usage, dict):
            return behaviour.usage
        completion += behaviour.reasoning_tokens
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if details:
            usage["prompt_tokens_details"] = {"cached_tokens": min(behaviour.cached_tokens, prompt)}
            usage["completion_tokens_details"] = {"reasoning_tokens": behaviour.reasoning_tokens}
        return usage

    def _render_chat(self, body: dict[str, Any], model: str, behaviour: Behaviour, stream: bool) -> _Rendered:
        raw = body.get("messages")
        messages = [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []
        prompt_tokens = sum(count_words(content_text(m.get("content"))) + 3 for m in messages)
        if behaviour.usage == "body":
            # As a real provider bills: tool definitions and response schemas are prompt tokens too.
            billed = {k: body[k] for k in ("messages", "tools", "response_format") if k in body}
            prompt_tokens = count_words(json.dumps(billed))

        tool = self._chat_tool_call(body, behaviour)
        content: str | None
        if tool is not None:
            content = behaviour.content
            finish_reason = "tool_calls"
            completion_tokens = count_words(tool["function"]["arguments"]) + count_words(content or "")
            pieces = word_pieces(content) if content else []
        else:
            content = (
                behaviour.content
                if behaviour.content is not None
                else self._chat_default_content(body, messages)
            )
            pieces = word_pieces(content)
            finish_reason = "stop"
            limit = _max_tokens(body)
            if limit is not None and limit < len(pieces):
                pieces = pieces[:limit]
                content = "".join(pieces)
                finish_reason = "length"
            completion_tokens = len(pieces)
        usage = self._usage(behaviour, prompt_tokens, completion_tokens, details=True)

        completion_id, created = _new_id("chatcmpl-"), int(time.time())
        if not stream:
            message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
            if tool is not None:
                message["tool_calls"] = [tool]
            payload: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
            if usage is not None:
                payload["usage"] = usage
            return _Rendered(False, [json.dumps(payload).encode()])

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            payload = {
                **base,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                # Like OpenAI: every chunk carries usage: null until the final usage-only chunk.
                payload["usage"] = None
            return _sse(payload)

        events: list[bytes] = []
        if tool is None or pieces:
            events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            events.extend(chunk({"content": piece}) for piece in pieces)
        if tool is not None:
            head: dict[str, Any] = {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": tool["id"],
                        "type": "function",
                        "function": {"name": tool["function"]["name"], "arguments": ""},
                    }
                ]
            }
            if not events:
                head = {"role": "assistant", "content": None, **head, "refusal": None}
            events.append(chunk(head))
            for fragment in re.findall(r"\w+|\W+", tool["function"]["arguments"]):
                events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}))
        events.append(chunk({}, finish_reason))
        if include_usage and usage is not None:
            events.append(_sse({**base, "choices": [], "usage": usage}))
        events.append(_sse("[DONE]"))
        return _Rendered(True, events)

    @staticmethod
    def _chat_default_content(body: dict[str, Any], messages: list[dict[str, Any]]) -> str:
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") in (
            "json_object",
            "json_schema",
        ):
            schema = (response_format.get("json_schema") or {}).get("schema")
            value = example_from_schema(schema) if schema else {"answer": "42"}
            return json.dumps(value)
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        return default_reply(content_text(last_user.get("content")) if last_user else "")

    @staticmethod
    def _chat_tool_call(body: dict[str, Any], behaviour: Behaviour) -> dict[str, Any] | None:
        tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
        tool_choice = body.get("tool_choice")
        wanted = (
            behaviour.tool_call if behaviour.tool_call is not None else bool(tools) and tool_choice != "none"
        )
        if not wanted:
            return None
        name = None
        if isinstance(tool_choice, dict):
            name = (tool_choice.get("function") or {}).get("name")
        if name is None and tools:
            name = (tools[0].get("function") or {}).get("name")
        return {
            "id": _new_id("call_"),
            "type": "function",
            "function": {
                "name": name or "get_weather",
                "arguments": behaviour.tool_arguments or DEFAULT_TOOL_ARGUMENTS,
            },
        }

    def _render_completion(
        self, body: dict[str, Any], model: str, behaviour: Behaviour, stream: bool
    ) -> _Rendered:
        prompt = body.get("prompt")
        prompts: list[Any] = prompt if isinstance(prompt, list) else [prompt]
        if prompts and all(isinstance(p, int) for p in prompts):
            prompts = [prompts]  # a single prompt given as token ids
        prompt_tokens = sum(len(p) if isinstance(p, list) else count_words(str(p)) for p in prompts)
        first = prompts[0] if prompts and isinstance(prompts[0], str) else ""

        text = behaviour.content if behaviour.content is not None else default_reply(first)
        pieces = word_pieces(text)
        finish_reason = "stop"
        limit = _max_tokens(body)
        if limit is not None and limit < len(pieces):
            pieces = pieces[:limit]
            text = "".join(pieces)
            finish_reason = "length"
        usage = self._usage(behaviour, prompt_tokens, len(pieces), details=False)

        base = {
            "id": _new_id("cmpl-"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
        }
        if not stream:
            payload: dict[str, Any] = {
                **base,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
            }
            if usage is not None:
                payload["usage"] = usage
            return _Rendered(False, [json.dumps(payload).encode()])

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(piece: str, finish: str | None = None) -> bytes:
            payload = {
                **base,
                "choices": [{"text": piece, "index": 0, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                payload["usage"] = None
            return _sse(payload)

        events = [chunk(piece) for piece in pieces]
        events.append(chunk("", finish_reason))
        if include_usage and usage is not None:
            events.append(_sse({**base, "choices": [], "usage": usage}))
        events.append(_sse("[DONE]"))
        return _Rendered(True, events)

    def _render_embeddings(self, body: dict[str, Any], model: str, behaviour: Behaviour) -> _Rendered:
        raw = body.get("input")
        items: list[Any] = raw if isinstance(raw, list) else [raw]
        if items and all(isinstance(i, int) for i in items):
            items = [items]  # a single input given as token ids
        dims = body.get("dimensions")
        dims = dims if isinstance(dims, int) and dims > 0 else DEFAULT_EMBEDDING_DIMS
        as_base64 = body.get("encoding_format") == "base64"  # the openai SDK asks for base64 by default

        data = []
        for index, item in enumerate(items):
            vector = embedding_vector(item, dims)
            encoded: list[float] | str = (
                base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if as_base64 else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(i) if isinstance(i, list) else count_words(str(i)) for i in items)
        usage: dict[str, Any] | None = (
            behaviour.usage
            if behaviour.usage is None or isinstance(behaviour.usage, dict)
            else {"prompt_tokens": tokens, "total_tokens": tokens}
        )
        payload: dict[str, Any] = {"object": "list", "data": data, "model": model}
        if usage is not None:
            payload["usage"] = usage
        return _Rendered(False, [json.dumps(payload).encode()])

    # -- models -----------------------------------------------------------------------------------------

    @staticmethod
    def _model_object(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "fake-openai"}

    async def _list_models(self, request: web.Request) -> web.Response:
        await self._record(request)
        try:
            self._check_auth(request)
        except _Reject as reject:
            return reject.response
        return web.json_response({"object": "list", "data": [self._model_object(m) for m in self.models]})

    async def _get_model(self, request: web.Request) -> web.Response:
        await self._record(request)
        try:
            self._check_auth(request)
        except _Reject as reject:
            return reject.response
        model_id = request.match_info["model"]
        if model_id not in self.models:
            return error_response(
                404,
                f"The model '{model_id}' does not exist",
                "invalid_request_error",
                code="model_not_found",
                param="model",
            )
        return web.json_response(self._model_object(model_id))

    async def _not_found(self, request: web.Request) -> web.Response:
        await self._record(request)
        return error_response(404, f"Invalid URL ({request.method} {request.path})", "invalid_request_error")

    # -- HTTP control API (for tests driving the fake from another process) ----------------------------

    async def _control_push(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            items = data if isinstance(data, list) else [data]
            for item in items:
                if isinstance(item, dict) and "times" in item:
                    item = dict(item)
                    times = int(item.pop("times"))
                else:
                    times = 1
                self.push(item, times=times)
        except (TypeError, ValueError) as exc:
            return error_response(400, f"bad behaviour: {exc}", "invalid_request_error")
        return web.json_response({"queued": len(self.pending)})

    async def _control_default(self, request: web.Request) -> web.Response:
        try:
            self.set_default(await request.json())
        except (TypeError, ValueError) as exc:
            return error_response(400, f"bad behaviour: {exc}", "invalid_request_error")
        return web.json_response({"default": self.default.to_dict()})

    async def _control_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _control_requests(self, request: web.Request) -> web.Response:
        return web.json_response([r.to_dict() for r in self.requests])

    async def _control_state(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "default": self.default.to_dict(),
                "queue": [b.to_dict() for b in self.pending],
                "requests": len(self.requests),
            }
        )


def _headers() -> dict[str, str]:
    return {"x-request-id": _new_id("req_"), "openai-processing-ms": "1"}


async def _write_quietly(response: web.StreamResponse, data: bytes) -> bool:
    """Write to a streaming response; False if the client has gone away (not an error for a fake)."""
    try:
        await response.write(data)
    except (ConnectionError, RuntimeError):
        return False
    return True


class OpenAIUpstreamControl:
    """Drive a FakeOpenAIUpstream running in another process through its /_control API."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout

    def _post(self, path: str, payload: Any) -> Any:
        response = httpx.post(self.base_url + path, json=payload, timeout=self._timeout)
        response.raise_for_status()
        return response.json()

    def push(self, *behaviours: Behaviour | str | dict[str, Any], times: int = 1) -> None:
        payload = [{**as_behaviour(b).to_dict(), "times": times} for b in behaviours]
        self._post("/_control/push", payload)

    def set_default(self, behaviour: Behaviour | str | dict[str, Any]) -> None:
        self._post("/_control/default", as_behaviour(behaviour).to_dict())

    def reset(self) -> None:
        self._post("/_control/reset", {})

    def requests(self) -> list[RecordedRequest]:
        response = httpx.get(self.base_url + "/_control/requests", timeout=self._timeout)
        response.raise_for_status()
        return [RecordedRequest(**item) for item in response.json()]


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on startup)")
    parser.add_argument("--api-key", default=None, help="if set, requests must use exactly this bearer key")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model ids")
    parser.add_argument("--default", default=None, help="default behaviour spec, e.g. 'fail_500'")
    args = parser.parse_args(list(argv) if argv is not None else None)
    fake = FakeOpenAIUpstream(
        api_key=args.api_key,
        models=[m for m in args.models.split(",") if m],
        host=args.host,
        port=args.port,
    )
    if args.default:
        fake.set_default(args.default)
    serve_forever(fake)


if __name__ == "__main__":
    main()
