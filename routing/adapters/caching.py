"""Prompt caching: which endpoints honour `cache_control`, and removing it for those that do not."""

from __future__ import annotations

from typing import Any

# An endpoint's `prompt_caching` (catalog, optional): explicit = `cache_control` breakpoints are sent
# and honoured; implicit = the provider caches on its own (cache reads are still priced) and
# `cache_control` is removed; none = no caching, `cache_control` removed.
PROMPT_CACHING = ("explicit", "implicit", "none")


def default_prompt_caching(*, api_format: str, cache_read: bool, cache_write: bool) -> str:
    """What an endpoint that does not say gets: Anthropic-format endpoints with a cache price take
    `cache_control`; any other endpoint with a cache-read price caches implicitly."""
    if api_format == "anthropic" and (cache_read or cache_write):
        return "explicit"
    return "implicit" if cache_read else "none"


def _block(block: Any) -> Any:
    if not isinstance(block, dict):
        return block
    out = {k: v for k, v in block.items() if k != "cache_control"}
    if isinstance(out.get("content"), list):  # tool results nest blocks
        out["content"] = [_block(b) for b in out["content"]]
    return out


def without_cache_control(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages (OpenAI or Anthropic shape) with `cache_control` removed from every content block
    (copies; the request itself is left alone, since a failover may go to an endpoint that takes it)."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            m = {**m, "content": [_block(b) for b in content]}
        out.append(m)
    return out


def tools_without_cache_control(tools: list[Any]) -> list[Any]:
    return [_block(t) for t in tools]


def has_cache_control(messages: list[dict[str, Any]], tools: Any = None) -> bool:
    """Whether any content block (or tool) carries `cache_control` (a cheap scan, no copies)."""
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            for b in content:
                if isinstance(b, dict) and (
                    "cache_control" in b or (isinstance(b.get("content"), list) and has_cache_control([b]))
                ):
                    return True
    return isinstance(tools, list) and any(isinstance(t, dict) and "cache_control" in t for t in tools)
