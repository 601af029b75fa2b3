"""Exact cost of a request (integer picodollars) and the worst case a hold must reserve."""

from __future__ import annotations

from routing.adapters.base import Usage
from routing.byok import charged_units
from routing.catalog.snapshot import EndpointInfo
from routing.gateway.tokens import PromptBound
from routing.request import Request

# When neither the request nor the endpoint bounds the answer, reserve for this many tokens at most.
DEFAULT_OUTPUT_BOUND = 16_384
# Per image: above the documented maxima of Anthropic (~1,600: 1.15 megapixels / 750) and of OpenAI's
# tile-priced models (1,445 for a 2048x768 image at high detail). Models that multiply image tokens
# (gpt-4o-mini) can report more: settlement then charges the hold and records the excess.
IMAGE_TOKEN_BOUND = 2_000
# Audio, files and PDFs: their tokens are not bounded by their bytes (a PDF is billed per page, its
# text and a page image each), so a request with any reserves the endpoint's whole context for them:
# no provider bills a prompt longer than the model takes. With no context length in the catalog, this.
UNKNOWN_CONTEXT_BOUND = 2_000_000
# The tool-use prompt a provider adds when a request has tools (Anthropic documents 159-530 tokens
# depending on the model and tool_choice).
TOOL_PROMPT_BOUND = 600


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


def output_bound(ep: EndpointInfo, req: Request, prompt_tokens: int) -> int:
    if req.max_tokens:
        return int(req.max_tokens)
    bound = ep.max_completion_tokens or DEFAULT_OUTPUT_BOUND
    if ep.context_length:
        bound = min(bound, max(ep.context_length - prompt_tokens // 4, 1))
    return bound


def prompt_token_bound(ep: EndpointInfo, bound: PromptBound) -> int:
    """An upper bound on the prompt tokens `bound`'s request can be billed at this endpoint."""
    tokens = bound.size + bound.images * IMAGE_TOKEN_BOUND
    if bound.files:
        tokens += ep.context_length if ep.context_length > 1 else UNKNOWN_CONTEXT_BOUND
    if bound.tools:
        tokens += TOOL_PROMPT_BOUND
    return tokens


def worst_case_units(ep: EndpointInfo, req: Request) -> int:
    """An upper bound on what the request can cost at this endpoint: the prompt's serialized size bounds
    its token count (media by their own worst cases), and the answer is bounded by max_tokens or the
    endpoint's output limit. Settlement never charges more than this (billing.holds.hold_cap)."""
    bound = req.bound
    prompt_tokens = prompt_token_bound(ep, bound)
    prompt_rate = max(ep.prompt_units, ep.cache_write_units)
    completion_rate = max(ep.completion_units, ep.reasoning_units)
    list_units = (
        prompt_tokens * prompt_rate
        + output_bound(ep, req, bound.size) * completion_rate
        + bound.images * ep.image_units
        + ep.request_units
    )
    return charged_units(ep, list_units)
