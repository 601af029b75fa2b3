"""The internal request: one frozen, typed value per request, built once by a front door's parse.

Every front door (chat, text completions, /messages, embeddings) checks its wire format and builds a
`Request`; the router, the adapters, the hold and settlement read it and never change it. What is
derived from the body (the prompt's bound, its images, the sticky-routing opening) is computed here,
once, so nothing downstream walks the body again for it. Per-attempt state (images an adapter fetched,
say) lives on the attempt's CallContext, not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from routing.gateway.tokens import PromptBound, media_counts, widest
from switchyard.shared import setting

# Sticky routing hashes the organisation, the model and the conversation's opening (first system and
# first user message, or the prompt) cut to this many characters.
STICKY_PREFIX_CHARS = 4096


@dataclass(frozen=True, slots=True)
class Request:
    kind: str  # "chat", "completion" or "embedding"
    models: tuple[str, ...]  # the model and its fallbacks, in order, each checked
    stream: bool
    # The checked body in OpenAI's terms (max_tokens normalised, one prompt): what adapters forward
    # parameters from (routing/catalog/parameters.py) and what nothing writes to.
    fields: Mapping[str, Any]
    messages: list[dict[str, Any]] | None = None  # chat
    prompt: str | None = None  # text completion
    input: Any = None  # embeddings: a string, a token array, or a list of them
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None  # OpenRouter's unified reasoning object
    max_tokens: int | None = None
    user: str | None = None
    provider: dict[str, Any] | None = None  # routing preferences
    cache_control: bool = False  # a content part or tool carries cache_control
    wants_usage: bool = False  # a stream ends with a usage chunk
    # /messages: the customer's own Anthropic body (sent nearly as is to Anthropic-format endpoints),
    # and the first block only such an endpoint can take ("messages[0].content[1]: a document block").
    passthrough: dict[str, Any] | None = None
    native_only: str | None = None
    bound: PromptBound = field(
        default_factory=lambda: PromptBound(0)
    )  # what the hold covers of the prompt (tokens.PromptBound)
    images: int = 0  # image parts in the internal messages
    opening: str | None = None  # sticky routing's key material; None when too short to be sticky


def opening_of(kind: str, messages: list[dict[str, Any]] | None, prompt: str | None) -> str:
    """The conversation's opening: its first system and first user message, or the prompt."""
    if kind == "completion":
        return str(prompt or "")[:STICKY_PREFIX_CHARS]
    system = user = None
    for m in messages or ():
        role = m.get("role")
        if system is None and role in ("system", "developer"):
            system = m.get("content")
        elif user is None and role == "user":
            user = m.get("content")
        if system is not None and user is not None:
            break
    return orjson.dumps([system, user]).decode()[:STICKY_PREFIX_CHARS]


def completion_request(
    fields: dict[str, Any],
    *,
    kind: str,
    models: list[str] | tuple[str, ...],
    cache_control: bool = False,
    passthrough: dict[str, Any] | None = None,
    passthrough_bound: PromptBound | None = None,
    native_only: str | None = None,
) -> Request:
    """A chat or text completion request from its checked `fields`, with everything derived from them.

    The prompt bound is one orjson serialisation of the prompt fields and one pass over the content
    parts (routing/gateway/tokens.py); a /messages request is bounded by the wider of its translation
    and its own body (`passthrough_bound`), since either may go upstream."""
    get = fields.get
    messages = fields.get("messages") if kind == "chat" else None
    prompt = fields.get("prompt") if kind == "completion" else None
    if kind == "completion":
        bound = PromptBound(len(orjson.dumps((prompt, get("suffix"), get("stop")))))
        images = 0
    else:
        size = len(orjson.dumps((messages, get("tools"), get("response_format"), get("stop"))))
        images, files, chars = media_counts(messages)
        bound = PromptBound(size - chars, images, files, bool(get("tools")))
    if passthrough_bound is not None:
        bound = widest(bound, passthrough_bound)
    # Sticky routing only pays for prompts a provider caches (routing.router.route).
    sticky = bound.size // 4 >= int(setting("SWITCHYARD_STICKY_MIN_PROMPT_TOKENS"))
    options = get("stream_options")
    usage = get("usage")
    return Request(
        kind=kind,
        models=tuple(models),
        stream=bool(get("stream")),
        fields=MappingProxyType(fields),
        messages=messages,
        prompt=prompt,
        tools=get("tools"),
        tool_choice=get("tool_choice"),
        response_format=get("response_format"),
        reasoning=get("reasoning"),
        max_tokens=get("max_tokens"),
        user=get("user"),
        provider=get("provider"),
        cache_control=cache_control,
        wants_usage=bool(
            (isinstance(options, dict) and options.get("include_usage"))
            or (isinstance(usage, dict) and usage.get("include"))
        ),
        passthrough=passthrough,
        native_only=native_only,
        bound=bound,
        images=images,
        opening=opening_of(kind, messages, prompt) if sticky else None,
    )


def embedding_request(fields: dict[str, Any], *, models: list[str], size: int) -> Request:
    """An embeddings request; `size` bounds its input's tokens (UTF-8 bytes, token arrays' lengths)."""
    get = fields.get
    return Request(
        kind="embedding",
        models=tuple(models),
        stream=False,
        fields=MappingProxyType(fields),
        input=get("input"),
        user=get("user"),
        provider=get("provider"),
        bound=PromptBound(size),
    )
