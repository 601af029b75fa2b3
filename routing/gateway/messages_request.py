"""`POST /api/v1/messages`, the request side: an Anthropic Messages body checked field by field and
translated into the internal OpenAI-style chat request, and the bound of the body as sent through."""

from __future__ import annotations

from typing import Any

import orjson

from routing.adapters.reasoning import budget_reasoning
from routing.adapters.tools import (
    CHOICE_FROM_ANTHROPIC,
    call_from_tool_use,
    function_from_tool,
    tool_choice_from_anthropic,
)
from routing.gateway.tokens import PromptBound
from switchyard.errors import BadRequest

PASSTHROUGH = ("models", "provider", "usage", "temperature", "top_p", "top_k")
# Block types the internal (OpenAI-style) request cannot carry: such a request can only be served by
# an Anthropic-format endpoint, through pass-through.
NATIVE_ONLY_BLOCKS = {"document", "search_result", "container_upload"}
NATIVE_ONLY_IN_TOOL_RESULTS = {"image", "document", "search_result"}


def _fail(field: str, message: str) -> BadRequest:
    return BadRequest(f"{field}: {message}", metadata={"field": field})


# Every field is type-checked here, before anything looks inside it: a value of the wrong JSON type
# (a block `type` that is a list, say) is the caller's 400 naming the field, never a TypeError (500).


def _block_kind(block: Any, where: str) -> str:
    """A content block's `type`, once the block is known to be an object with a string type."""
    if not isinstance(block, dict):
        raise _fail(where, "must be a content block object")
    kind = block.get("type")
    if not isinstance(kind, str):
        raise _fail(f"{where}.type", "must be a string naming the content block type")
    return kind


def _optional(block: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    """`block[name]` when present; a 400 naming it when it is not of `kind` (never int: bool is one)."""
    value = block.get(name)
    if value is not None and not isinstance(value, kind):
        raise _fail(f"{where}.{name}", f"must be {what}")
    return value


def _cache_control(block: dict[str, Any], where: str, part: dict[str, Any]) -> None:
    value = _optional(block, "cache_control", dict, where, "an object")
    if value:
        part["cache_control"] = value


# ---- request: Anthropic -> internal (OpenAI) ------------------------------------------------------


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _fail(f"{where}.source", "is required and must be an object")
    if source.get("type") == "base64":
        if not isinstance(source.get("media_type"), str) or not isinstance(source.get("data"), str):
            raise _fail(f"{where}.source", "a base64 source needs media_type and data")
        url = f"data:{source['media_type']};base64,{source['data']}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise _fail(f"{where}.source.type", 'must be "base64" or "url"')
    part: dict[str, Any] = {"type": "image_url", "image_url": {"url": url}}
    _cache_control(block, where, part)
    return part


def _text_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(block.get("text"), str):
        raise _fail(f"{where}.text", "must be a string")
    part: dict[str, Any] = {"type": "text", "text": block["text"]}
    _cache_control(block, where, part)
    return part


def _native_block(block: dict[str, Any], where: str) -> None:
    """The shape of a block only pass-through sends (document, search_result, container_upload): its
    source, when it has one, is an object whose fields have their types."""
    _cache_control(block, where, {})
    source = block.get("source")
    if source is None and block.get("type") != "document":
        return
    if not isinstance(source, dict):
        raise _fail(f"{where}.source", "is required and must be an object")
    if not isinstance(source.get("type"), str):
        raise _fail(f"{where}.source.type", "must be a string")
    for name in ("media_type", "data", "url", "file_id"):
        _optional(source, name, str, f"{where}.source", "a string")
    _optional(source, "content", (str, list), f"{where}.source", "a string or a list of content blocks")


def _collapse(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Plain text parts become one string (what every provider takes); anything richer stays a list."""
    if all(p["type"] == "text" and "cache_control" not in p for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _stand_in(block: dict[str, Any]) -> str:
    """The text of a block only pass-through can send (a `document` or `search_result`), for the
    internal request's accounting: the hold's bound and an estimate when usage is missing. A PDF or a
    file counts for nothing there (its tokens are known only from the provider's usage)."""
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "text" and isinstance(source.get("data"), str):
        return source["data"]
    inner = source.get("content") if isinstance(source, dict) else block.get("content")
    if isinstance(inner, str):
        return inner
    if isinstance(inner, list):
        texts = [str(b.get("text", "")) for b in inner if isinstance(b, dict) and b.get("type") == "text"]
        return "\n".join(texts)
    return ""


def _block_media(blocks: Any, into: list[int]) -> None:
    """Add the images, files and media data characters among Anthropic content blocks to `into`."""
    for block in blocks if isinstance(blocks, list) else ():
        kind = block.get("type") if isinstance(block, dict) else None
        source = block.get("source") if isinstance(block, dict) else None
        if kind == "tool_result":
            _block_media(block.get("content"), into)
        elif kind == "image":
            into[0] += 1
        elif kind == "document" and isinstance(source, dict) and source.get("type") == "content":
            _block_media(source.get("content"), into)
        elif kind == "document" and isinstance(source, dict) and source.get("type") == "text":
            continue  # plain text: its bytes bound its tokens
        elif kind in ("document", "container_upload"):
            into[1] += 1  # a PDF (base64, URL or file id) is billed per page, whatever its bytes
        else:
            continue
        data = source.get("data") if isinstance(source, dict) else None
        if kind != "tool_result" and isinstance(data, str):
            into[2] += len(data)


def body_prompt_bound(body: dict[str, Any]) -> PromptBound:
    """The prompt bound of a /messages body as sent through (routing.gateway.tokens.PromptBound): its
    serialized size (system, tools, every block) without the media data, its images and its files."""
    media = [0, 0, 0]
    for m in body.get("messages") or ():
        if isinstance(m, dict):
            _block_media(m.get("content"), media)
    size = len(orjson.dumps(body)) - media[2]
    return PromptBound(size, media[0], media[1], bool(body.get("tools")))


def _tool_result(block: dict[str, Any], where: str, native: list[str]) -> dict[str, Any]:
    content = block.get("content")
    _cache_control(block, where, {})
    prefix = "Error: " if _optional(block, "is_error", bool, where, "true or false") else ""
    if content is None or isinstance(content, str):
        return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": prefix + (content or "")}
    if not isinstance(content, list):
        raise _fail(f"{where}.content", "must be a string or a list of content blocks")
    parts: list[dict[str, Any]] = []
    for k, sub in enumerate(content):
        kind = _block_kind(sub, f"{where}.content[{k}]")
        if kind == "text":
            parts.append(_text_part(sub, f"{where}.content[{k}]"))
            continue
        if kind not in NATIVE_ONLY_IN_TOOL_RESULTS:
            raise _fail(f"{where}.content[{k}].type", f"content block type {kind!r} is not supported here")
        # Images and documents in a tool result: Anthropic takes them, the internal format does not.
        native.append(f"{where}.content[{k}]: a {kind} block in a tool result")
        if kind == "image":
            parts.append(_image_part(sub, f"{where}.content[{k}]"))
        else:
            _native_block(sub, f"{where}.content[{k}]")
            parts.append({"type": "text", "text": _stand_in(sub)})
    if prefix:
        parts.insert(0, {"type": "text", "text": prefix})
    if all(p["type"] == "text" for p in parts):
        return {
            "role": "tool",
            "tool_call_id": block["tool_use_id"],
            "content": "".join(p["text"] for p in parts),
        }
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": parts}


def _user_turn(content: list[Any], where: str, native: list[str]) -> list[dict[str, Any]]:
    """A user turn: its tool results become tool messages (first), the rest one user message.

    Blocks only an Anthropic-format endpoint can take (documents, search results, images in tool
    results) are noted in `native`, with a stand-in for accounting (see MessagesFront.admit)."""
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}[{j}]"
        kind = _block_kind(block, at)
        if kind == "text":
            parts.append(_text_part(block, at))
        elif kind == "image":
            parts.append(_image_part(block, at))
        elif kind == "tool_result":
            if not isinstance(block.get("tool_use_id"), str):
                raise _fail(f"{at}.tool_use_id", "is required")
            out.append(_tool_result(block, at, native))
        elif kind in NATIVE_ONLY_BLOCKS:
            _native_block(block, at)
            native.append(f"{at}: a {kind} block")
            stand_in = _stand_in(block)
            if stand_in:
                parts.append({"type": "text", "text": stand_in})
        else:
            raise _fail(f"{at}.type", f"content block type {kind!r} is not supported here")
    if parts:
        out.append({"role": "user", "content": _collapse(parts)})
    return out


def _assistant_turn(content: list[Any], where: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}[{j}]"
        kind = _block_kind(block, at)
        if kind == "text":
            parts.append(_text_part(block, at))
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _fail(at, "tool_use needs an id and a name")
            _optional(block, "input", dict, at, "an object")
            _cache_control(block, at, {})
            calls.append(call_from_tool_use(block))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # earlier reasoning is not replayed across formats
        else:
            raise _fail(f"{at}.type", f"content block type {kind!r} is not supported here")
    message: dict[str, Any] = {"role": "assistant", "content": _collapse(parts) if parts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _fail("tools", "must be a list")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _fail(f"tools[{i}]", "must be an object")
        kind = tool.get("type")
        if kind is not None and not isinstance(kind, str):
            raise _fail(f"tools[{i}].type", "must be a string")
        if kind not in (None, "custom"):
            raise _fail(f"tools[{i}].type", f"server tool {kind!r} is not supported; only custom tools are")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _fail(f"tools[{i}].name", "is required and must be a string")
        _optional(tool, "description", str, f"tools[{i}]", "a string")
        _optional(tool, "input_schema", dict, f"tools[{i}]", "an object (a JSON schema)")
        _cache_control(tool, f"tools[{i}]", {})
        out.append(function_from_tool(tool))
    return out


def _tool_choice(choice: Any, out: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        raise _fail("tool_choice", "must be an object")
    kind = choice.get("type")
    if kind == "tool":
        if not isinstance(choice.get("name"), str) or not choice["name"]:
            raise _fail("tool_choice.name", 'is required with type "tool" and must be a string')
    elif not isinstance(kind, str) or kind not in CHOICE_FROM_ANTHROPIC:
        raise _fail("tool_choice.type", 'must be "auto", "any", "tool" or "none"')
    _optional(choice, "disable_parallel_tool_use", bool, "tool_choice", "true or false")
    out["tool_choice"], parallel = tool_choice_from_anthropic(choice)
    if parallel is not None:
        out["parallel_tool_calls"] = parallel


def to_internal(body: Any) -> dict[str, Any]:
    """An Anthropic Messages request as the internal OpenAI-style chat request (unvalidated)."""
    return translate(body)[0]


def translate(body: Any) -> tuple[dict[str, Any], str | None]:
    """An Anthropic Messages request as the internal OpenAI-style chat request (unvalidated), and the
    first block in it only an Anthropic-format endpoint can take (its field path and kind), if any."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _fail("model", "is required")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise _fail("max_tokens", "is required and must be an integer")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise _fail("messages", "must be a non-empty list")
    messages: list[dict[str, Any]] = []
    native: list[str] = []
    system = body.get("system")
    if isinstance(system, str):
        if system:
            messages.append({"role": "system", "content": system})
    elif isinstance(system, list):
        parts = []
        for i, block in enumerate(system):
            if _block_kind(block, f"system[{i}]") != "text":
                raise _fail(f"system[{i}].type", 'must be "text"')
            parts.append(_text_part(block, f"system[{i}]"))
        if parts:
            messages.append({"role": "system", "content": _collapse(parts)})
    elif system is not None:
        raise _fail("system", "must be a string or a list of text blocks")
    for i, m in enumerate(raw_messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise _fail(f"{where}.role", 'must be "user" or "assistant"')
        content = m.get("content")
        if isinstance(content, str):
            messages.append({"role": m["role"], "content": content})
            continue
        if not isinstance(content, list):
            raise _fail(f"{where}.content", "must be a string or a list of content blocks")
        if m["role"] == "user":
            messages.extend(_user_turn(content, f"{where}.content", native))
        else:
            messages.append(_assistant_turn(content, f"{where}.content"))
    out: dict[str, Any] = {"model": body["model"], "max_tokens": max_tokens, "messages": messages}
    for name in PASSTHROUGH:
        if name in body:
            out[name] = body[name]
    if body.get("stream") is not None:
        out["stream"] = body["stream"]
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _fail("stop_sequences", "must be a list of strings")
        out["stop"] = stop
    if body.get("tools") is not None:
        out["tools"] = _tools(body["tools"])
        if not out["tools"]:
            del out["tools"]
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], out)
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise _fail("metadata", "must be an object")
        if _optional(metadata, "user_id", str, "metadata", "a string"):
            out["user"] = metadata["user_id"]
    thinking = body.get("thinking")
    if thinking is not None:
        if not isinstance(thinking, dict):
            raise _fail("thinking", "must be an object")
        if thinking.get("type") not in ("enabled", "disabled"):
            raise _fail("thinking.type", 'must be "enabled" or "disabled"')
    if thinking is not None and thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise _fail("thinking.budget_tokens", "must be a positive integer")
        out["reasoning"] = budget_reasoning(budget)
    return out, (native[0] if native else None)
