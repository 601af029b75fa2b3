"""Gemini generateContent wire format: OpenAI-style requests to `models/{id}:generateContent` and back."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from routing.adapters.anthropic import parse_data_uri
from routing.adapters.base import (
    CallContext,
    Completion,
    Embeddings,
    StreamTranslator,
    UpstreamFailure,
    Usage,
    provider_usage,
    usage_fields,
)
from routing.adapters.openai import forwardable
from routing.adapters.reasoning import ReasoningStripped, thinking_config
from routing.gateway.images import ImageFetchError, image_urls, inline_images
from routing.request import Request

FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}
FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length", **{r: "content_filter" for r in FILTERED}}
# JSON-schema keywords Gemini's OpenAPI-subset schemas reject.
SCHEMA_DROP = {"$schema", "additionalProperties", "strict", "$id", "$defs", "definitions", "$ref"}


def finish_reason(native: str | None, has_calls: bool) -> str | None:
    if native is None:
        return None
    if has_calls and native == "STOP":
        return "tool_calls"
    return FINISH_REASONS.get(native, "stop")


def clean_schema(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: clean_schema(v) for k, v in schema.items() if k not in SCHEMA_DROP}
    if isinstance(schema, list):
        return [clean_schema(v) for v in schema]
    return schema


# ---- request: OpenAI -> Gemini --------------------------------------------------------------------


def _parts(content: Any, images: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    out: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            out.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = str(image.get("url") if isinstance(image, dict) else image)
            inline = parse_data_uri(url) or images.get(url)
            if inline is None:
                raise UpstreamFailure(
                    400,
                    f"The image {url[:80]} was not fetched for Gemini.",
                    retriable=False,
                    kind="bad_request",
                )
            out.append({"inlineData": {"mimeType": inline[0], "data": inline[1]}})
        else:
            raise UpstreamFailure(
                400,
                f"Content part type {kind!r} is not supported by this Gemini adapter.",
                retriable=True,
                kind="unsupported",
            )
    return out


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _function_response(content: Any) -> dict[str, Any]:
    text = _text_of(content)
    try:
        value = json.loads(text)
    except ValueError:
        return {"content": text}
    return value if isinstance(value, dict) else {"content": value}


def convert_contents(
    messages: list[dict[str, Any]], images: dict[str, tuple[str, str]] | None = None
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(systemInstruction, contents) with roles user/model; consecutive same-role turns merge."""
    images = images or {}
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for m in messages:
        role = m["role"]
        if role in ("system", "developer"):
            text = _text_of(m.get("content"))
            if text:
                system.append({"text": text})
            continue
        if role == "assistant":
            turn, parts = "model", _parts(m.get("content"), images)
            for call in m.get("tool_calls") or []:
                fn = call.get("function") or {}
                call_names[call.get("id") or ""] = fn.get("name", "")
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    args = {"arguments": fn.get("arguments")}
                parts.append({"functionCall": {"name": fn.get("name", ""), "args": args}})
        elif role in ("tool", "function"):
            name = m.get("name") or call_names.get(m.get("tool_call_id") or "", "")
            turn = "user"
            parts = [{"functionResponse": {"name": name, "response": _function_response(m.get("content"))}}]
        else:
            turn, parts = "user", _parts(m.get("content"), images)
        if not parts:
            continue
        if contents and contents[-1]["role"] == turn:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn, "parts": parts})
    return ({"parts": system} if system else None), contents


def convert_tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, dict):
        return {
            "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}
        }
    mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}.get(choice, "AUTO")
    return {"functionCallingConfig": {"mode": mode}}


def build_body(
    req: Request, *, supported: frozenset[str], images: dict[str, tuple[str, str]] | None = None
) -> dict[str, Any]:
    system, contents = convert_contents(req.messages or [], images)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = system
    params = forwardable(req, supported)
    config: dict[str, Any] = {}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if params.get(ours) is not None:
            config[theirs] = params[ours]
    if req.max_tokens:
        config["maxOutputTokens"] = req.max_tokens
    stop = params.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = params.get("response_format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema") if fmt["type"] == "json_schema" else None
        if schema:
            config["responseSchema"] = clean_schema(schema)
    if not supported or "reasoning" in supported:
        thinking = thinking_config(req.reasoning, req.max_tokens)
        if thinking:
            config["thinkingConfig"] = thinking
    if config:
        body["generationConfig"] = config
    if params.get("tools"):
        declarations = []
        for tool in params["tools"]:
            fn = tool["function"]
            decl: dict[str, Any] = {"name": fn["name"]}
            if fn.get("description"):
                decl["description"] = fn["description"]
            if fn.get("parameters") and (
                fn["parameters"].get("properties") or fn["parameters"].get("type") != "object"
            ):
                decl["parameters"] = clean_schema(fn["parameters"])
            declarations.append(decl)
        body["tools"] = [{"functionDeclarations": declarations}]
        tool_config = convert_tool_config(params.get("tool_choice"))
        if tool_config:
            body["toolConfig"] = tool_config
    return body


# ---- response: Gemini -> OpenAI -------------------------------------------------------------------


def usage_from_gemini(u: Any) -> Usage | None:
    u = usage_fields(u)
    if "promptTokenCount" not in u:
        return None
    thoughts = u.get("thoughtsTokenCount")
    return provider_usage(
        "gemini",
        u,
        prompt=u.get("promptTokenCount"),
        completion=u.get("candidatesTokenCount"),
        cached=u.get("cachedContentTokenCount"),
        reasoning=thoughts,
        extra_completion=(thoughts,),
    )


def call_id(name: str, args: Any, seq: int) -> str:
    digest = hashlib.sha256(f"{seq}:{name}:{orjson.dumps(args).decode()}".encode()).hexdigest()[:24]
    return f"call_{digest}"


def _candidate_parts(data: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    if data.get("error"):
        err = data["error"]
        message = err.get("message") if isinstance(err, dict) else str(err)
        raise UpstreamFailure(502, f"Provider error: {message}", retriable=True, kind="stream_error")
    candidates = data.get("candidates") or []
    if not candidates:
        return None, []
    cand = candidates[0]
    return cand, list((cand.get("content") or {}).get("parts") or [])


def parse_generate(data: dict[str, Any], *, exclude_reasoning: bool = False) -> Completion:
    cand, parts = _candidate_parts(data)
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts:
        if "functionCall" in part:
            fc = part["functionCall"]
            args = fc.get("args") or {}
            calls.append(
                {
                    "id": fc.get("id") or call_id(fc["name"], args, len(calls)),
                    "type": "function",
                    "function": {"name": fc["name"], "arguments": orjson.dumps(args).decode()},
                }
            )
        elif part.get("thought"):
            thoughts.append(part.get("text") or "")
        elif "text" in part:
            text.append(part["text"])
    if cand is None:
        native = ((data.get("promptFeedback") or {}).get("blockReason")) or "SAFETY"
        reason: str | None = "content_filter"
    else:
        native = cand.get("finishReason") or "STOP"
        reason = finish_reason(native, bool(calls))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    if thoughts and not exclude_reasoning:
        message["reasoning"] = "".join(thoughts)
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reason}
    return Completion(
        choices=[choice], usage=usage_from_gemini(data.get("usageMetadata")), native_finish_reason=native
    )


# batchEmbedContents takes at most this many inputs in one call.
MAX_EMBED_INPUTS = 100


def _unsupported(message: str) -> UpstreamFailure:
    return UpstreamFailure(400, message, retriable=True, kind="unsupported")


def embed_body(req: Request, model: str) -> dict[str, Any]:
    """An OpenAI embeddings request as a batchEmbedContents body: one request per input string."""
    value = req.input
    inputs = [value] if isinstance(value, str) else value
    if not all(isinstance(text, str) for text in inputs):
        raise _unsupported("Gemini embeddings take text, not token arrays.")
    if len(inputs) > MAX_EMBED_INPUTS:
        raise _unsupported(f"Gemini embeds at most {MAX_EMBED_INPUTS} inputs per request.")
    requests = []
    for text in inputs:
        one: dict[str, Any] = {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
        if req.fields.get("dimensions"):
            one["outputDimensionality"] = req.fields["dimensions"]
        requests.append(one)
    return {"requests": requests}


def parse_embeddings(data: dict[str, Any], req: Request) -> Embeddings:
    """`embeddings[].values` as OpenAI's `data` items (float lists, or base64 float32 when asked).
    Gemini reports no usage: the gateway counts the input's tokens and marks them estimated."""
    items = data.get("embeddings")
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("values"), list) for i in items
    ):
        raise ValueError("no embeddings[].values")
    out = []
    for index, item in enumerate(items):
        vector = item["values"]
        encoded: Any = vector
        if req.fields.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        out.append({"object": "embedding", "index": index, "embedding": encoded})
    return Embeddings(data=out, usage=None)


# CallContext.scratch key: the images of a request fetched for Gemini (shared by its attempts).
IMAGES = "gemini_images"


class GeminiAdapter(ReasoningStripped):
    def build_request(
        self, ctx: CallContext, req: Request, *, stream: bool
    ) -> tuple[str, dict[str, str], bytes]:
        ep = ctx.endpoint
        model = ep.provider_model_id.removeprefix("models/")
        if req.kind == "embedding":
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            if ctx.api_key:
                headers["x-goog-api-key"] = ctx.api_key
            url = f"{ep.base_url.rstrip('/')}/models/{model}:batchEmbedContents"
            return url, headers, orjson.dumps(embed_body(req, model))
        if req.kind != "chat":
            raise UpstreamFailure(
                400, "Gemini models only serve chat requests.", retriable=True, kind="unsupported"
            )
        body = build_body(req, supported=ep.supported_parameters, images=ctx.scratch.get(IMAGES))
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        }
        if ctx.api_key:
            headers["x-goog-api-key"] = ctx.api_key
        return f"{ep.base_url.rstrip('/')}/models/{model}:{method}", headers, orjson.dumps(body)

    def parse_response(self, data: dict[str, Any]) -> Completion:
        return parse_generate(data)

    def stream_events(self) -> StreamTranslator:
        return GeminiStream()

    async def embed(self, ctx: CallContext, req: Request) -> Embeddings:
        data = await self._call_json(ctx, req)
        try:
            result = parse_embeddings(data, req)
        except (ValueError, TypeError, struct.error) as exc:
            raise UpstreamFailure(
                502,
                f"{ctx.endpoint.provider_name} sent a malformed embeddings response ({exc}).",
                retriable=True,
                kind="malformed",
            )
        expected = 1 if isinstance(req.input, str) else len(req.input)
        if len(result.data) != expected:
            raise UpstreamFailure(
                502,
                f"{ctx.endpoint.provider_name} sent {len(result.data)} embeddings for {expected} inputs.",
                retriable=True,
                kind="malformed",
            )
        return result

    async def _inline(self, ctx: CallContext, req: Request) -> None:
        """Fetch the request's image URLs (Gemini takes inline data only) once for all its attempts:
        into the attempt's scratch, never onto the request."""
        if req.kind != "chat" or IMAGES in ctx.scratch:
            return
        view = {"messages": req.messages}
        if image_urls(view):
            try:
                ctx.scratch[IMAGES] = await inline_images(view)
            except ImageFetchError as exc:
                raise UpstreamFailure(400, str(exc), retriable=False, kind="bad_request")

    async def complete(self, ctx: CallContext, req: Request) -> Completion:
        await self._inline(ctx, req)
        return await super().complete(ctx, req)  # (reasoning stripped when excluded)

    async def stream(self, ctx: CallContext, req: Request) -> AsyncGenerator[dict[str, Any] | Usage, None]:
        await self._inline(ctx, req)
        async for item in super().stream(ctx, req):
            yield item


class GeminiStream(StreamTranslator):
    """Each SSE event is a whole GenerateContentResponse holding the next parts; the one with a
    finishReason (and the usage) ends the answer."""

    def __init__(self) -> None:
        super().__init__()
        self.started = False
        self.calls = 0
        self.usage: Usage | None = None

    def on_event(self, event: str | None, data: bytes) -> list[dict[str, Any] | Usage]:
        payload = self.load(data)
        if not isinstance(payload, dict):
            raise UpstreamFailure(
                502, "The provider sent a malformed stream event.", retriable=True, kind="malformed"
            )
        cand, parts = _candidate_parts(payload)
        deltas: list[dict[str, Any]] = []
        for part in parts:
            if "functionCall" in part:
                fc = part["functionCall"]
                args = fc.get("args") or {}
                call = {
                    "index": self.calls,
                    "id": fc.get("id") or call_id(fc["name"], args, self.calls),
                    "type": "function",
                    "function": {"name": fc["name"], "arguments": orjson.dumps(args).decode()},
                }
                self.calls += 1
                deltas.append({"tool_calls": [call]})
            elif part.get("thought"):
                if part.get("text"):
                    deltas.append({"reasoning": part["text"]})
            elif part.get("text"):
                deltas.append({"content": part["text"]})
        usage = usage_from_gemini(payload.get("usageMetadata"))
        if usage is not None:
            self.usage = usage
        finish = None
        if cand is None and (payload.get("promptFeedback") or {}).get("blockReason"):
            finish = "content_filter"
        elif cand is not None and cand.get("finishReason"):
            finish = finish_reason(cand["finishReason"], self.calls > 0)
        out: list[dict[str, Any] | Usage] = []
        if (deltas or finish) and not self.started:
            self.started = True
            out.append(
                {
                    "choices": [
                        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                    ]
                }
            )
        for delta in deltas:
            out.append({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        if finish:
            out.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
            self.done = True
            if self.usage is not None:
                out.append(self.usage)
        return out
