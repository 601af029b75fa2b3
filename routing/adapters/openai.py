"""OpenAI wire format: OpenAI itself and every OpenAI-compatible host (Groq, Together, Fireworks, ...)."""

from __future__ import annotations

from typing import Any

import orjson

from routing.adapters.base import (
    Adapter,
    CallContext,
    Completion,
    Embeddings,
    StreamTranslator,
    UpstreamFailure,
    Usage,
    provider_usage,
    usage_fields,
)
from routing.adapters.caching import tools_without_cache_control, without_cache_control
from routing.adapters.reasoning import reasoning_effort
from routing.catalog.parameters import FORWARDED_FIELDS
from routing.request import Request

# Per-provider quirks live here and only here.
MAX_TOKENS_FIELD = {"openai": "max_completion_tokens", "azure": "max_completion_tokens"}
NO_STREAM_OPTIONS: set[str] = set()


def usage_from_openai(u: Any) -> Usage | None:
    if not u:
        return None
    u = usage_fields(u)
    prompt_details = usage_fields(u.get("prompt_tokens_details"))
    completion_details = usage_fields(u.get("completion_tokens_details"))
    return provider_usage(
        "openai",
        u,
        prompt=u.get("prompt_tokens"),
        completion=u.get("completion_tokens"),
        cached=prompt_details.get("cached_tokens"),
        cache_write=prompt_details.get("cache_write_tokens"),
        reasoning=completion_details.get("reasoning_tokens"),
    )


def forwardable(req: Request, supported: frozenset[str]) -> dict[str, Any]:
    """The request's sampling/tool fields this endpoint accepts (all known ones when it lists none)."""
    fields = req.fields
    out: dict[str, Any] = {}
    for param, names in FORWARDED_FIELDS.items():
        if supported and param not in supported:
            continue
        for name in names:
            if name in fields:
                out[name] = fields[name]
    return out


class OpenAIAdapter(Adapter):
    def build_request(
        self, ctx: CallContext, req: Request, *, stream: bool
    ) -> tuple[str, dict[str, str], bytes]:
        ep = ctx.endpoint
        body: dict[str, Any] = {"model": ep.provider_model_id}
        if req.kind == "embedding":
            body["input"] = req.input
            for name in ("encoding_format", "dimensions", "user"):
                if req.fields.get(name) is not None:
                    body[name] = req.fields[name]
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            if ctx.api_key:
                headers["Authorization"] = f"Bearer {ctx.api_key}"
            return ep.base_url + "/embeddings", headers, orjson.dumps(body)
        if req.kind == "completion":
            path = "/completions"
            body["prompt"] = req.prompt
        else:
            path = "/chat/completions"
            body["messages"] = req.messages
        body.update(forwardable(req, ep.supported_parameters))
        if req.cache_control and not ep.explicit_caching:
            body["messages"] = without_cache_control(body["messages"])
            if body.get("tools"):
                body["tools"] = tools_without_cache_control(body["tools"])
        if req.max_tokens is not None:
            body[MAX_TOKENS_FIELD.get(ep.provider_slug, "max_tokens")] = req.max_tokens
        if req.user:
            body["user"] = req.user
        effort = reasoning_effort(req.reasoning, req.max_tokens)
        if effort and "reasoning" in ep.supported_parameters:
            body["reasoning_effort"] = effort
        if stream:
            body["stream"] = True
            if ep.provider_slug not in NO_STREAM_OPTIONS:
                body["stream_options"] = {"include_usage": True}
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        }
        if ctx.api_key:
            headers["Authorization"] = f"Bearer {ctx.api_key}"
        return ep.base_url + path, headers, orjson.dumps(body)

    def parse_response(self, data: dict[str, Any]) -> Completion:
        if "error" in data and "choices" not in data:
            err = data["error"]
            message = err.get("message") if isinstance(err, dict) else err
            raise UpstreamFailure(
                502, f"Provider error: {message or 'unknown'}", retriable=True, kind="provider_error"
            )
        choices = data["choices"]
        if not isinstance(choices, list):
            raise TypeError("choices is not a list")
        native = choices[0].get("finish_reason") if choices else None
        return Completion(
            choices=choices, usage=usage_from_openai(data.get("usage")), native_finish_reason=native
        )

    def stream_events(self) -> StreamTranslator:
        return OpenAIStream()

    async def embed(self, ctx: CallContext, req: Request) -> Embeddings:
        data = await self._call_json(ctx, req)
        items = data.get("data")
        if not isinstance(items, list) or not all(isinstance(i, dict) and "embedding" in i for i in items):
            raise UpstreamFailure(
                502,
                f"{ctx.endpoint.provider_name} sent a malformed embeddings response.",
                retriable=True,
                kind="malformed",
            )
        u = usage_fields(data.get("usage"))
        usage = (
            provider_usage("openai", u, prompt=u["prompt_tokens"], completion=0)
            if "prompt_tokens" in u
            else None
        )
        return Embeddings(data=items, usage=usage)


class OpenAIStream(StreamTranslator):
    def on_event(self, event: str | None, data: bytes) -> list[dict[str, Any] | Usage]:
        if data == b"[DONE]":
            self.done = True
            return []
        chunk = self.load(data)
        if not isinstance(chunk, dict):
            raise UpstreamFailure(
                502, "The provider sent a malformed stream event.", retriable=True, kind="malformed"
            )
        if chunk.get("error"):
            err = chunk["error"]
            message = err.get("message") if isinstance(err, dict) else str(err)
            raise UpstreamFailure(
                502, f"Provider error mid-stream: {message}", retriable=True, kind="stream_error"
            )
        out: list[dict[str, Any] | Usage] = []
        if chunk.get("choices"):
            out.append({"choices": chunk["choices"]})
        usage = usage_from_openai(chunk.get("usage"))
        if usage is not None:
            out.append(usage)
        return out
