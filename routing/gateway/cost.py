"""Exact cost of a request (integer picodollars) and the worst case a hold must reserve."""

from __future__ import annotations

from typing import Any

from routing.adapters.base import Usage
from routing.byok import charged_units
from routing.catalog.snapshot import EndpointInfo

# When neither the request nor the endpoint bounds the answer, reserve for this many tokens at most.
DEFAULT_OUTPUT_BOUND = 16_384
IMAGE_TOKEN_BOUND = 2_000


def cost_units(ep: EndpointInfo, usage: Usage) -> int:
    """Prices x tokens, exactly. Cached and cache-write tokens are part of prompt_tokens and reasoning
    tokens part of completion_tokens (OpenAI's accounting), so each is priced once at its own rate.
    Through the organisation's own key (BYOK) it is the platform fee on that list cost."""
    uncached = max(usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens, 0)
    plain_completion = max(usage.completion_tokens - usage.reasoning_tokens, 0)
    list_units = (
        uncached * ep.prompt_units
        + usage.cached_tokens * (ep.cache_read_units or ep.prompt_units)
        + usage.cache_write_tokens * (ep.cache_write_units or ep.prompt_units)
        + plain_completion * ep.completion_units
        + usage.reasoning_tokens * ep.reasoning_units
        + usage.images * ep.image_units
        + ep.request_units
    )
    return charged_units(ep, list_units)


def output_bound(ep: EndpointInfo, req: dict[str, Any], prompt_tokens: int) -> int:
    if req.get("max_tokens"):
        return int(req["max_tokens"])
    bound = ep.max_completion_tokens or DEFAULT_OUTPUT_BOUND
    if ep.context_length:
        bound = min(bound, max(ep.context_length - prompt_tokens // 4, 1))
    return bound


def worst_case_units(ep: EndpointInfo, req: dict[str, Any], prompt_bytes: int, images: int) -> int:
    """An upper bound on what the request can cost at this endpoint: the prompt's byte count bounds its
    token count, and the answer is bounded by max_tokens or the endpoint's output limit."""
    prompt_tokens = prompt_bytes + images * IMAGE_TOKEN_BOUND
    prompt_rate = max(ep.prompt_units, ep.cache_write_units)
    completion_rate = max(ep.completion_units, ep.reasoning_units)
    list_units = (
        prompt_tokens * prompt_rate
        + output_bound(ep, req, prompt_bytes) * completion_rate
        + images * ep.image_units
        + ep.request_units
    )
    return charged_units(ep, list_units)
