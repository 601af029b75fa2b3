"""Candidate selection and ordering: which endpoints may serve a request, and in what order to try them."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from routing.catalog.snapshot import EndpointInfo, ModelInfo, Snapshot
from switchyard.errors import BadRequest, NoProviderAvailable, NotFound

VARIANTS = {"free", "floor", "nitro", "online", "thinking", "extended"}
PREF_KEYS = {
    "order",
    "allow_fallbacks",
    "require_parameters",
    "data_collection",
    "zdr",
    "only",
    "ignore",
    "quantizations",
    "sort",
    "max_price",
    "preferred_min_throughput",
    "preferred_max_latency",
    "sort_by",
}
# Request fields that count as "parameters" for require_parameters.
PARAMETER_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "stop",
    "seed",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "reasoning",
)


@dataclass(frozen=True, slots=True)
class Candidate:
    model: ModelInfo
    endpoint: EndpointInfo


def split_variant(slug: str) -> tuple[str, str | None]:
    base, sep, variant = slug.rpartition(":")
    if sep and variant in VARIANTS:
        return base, variant
    return slug, None


def merge_preferences(org_defaults: dict[str, Any], request: dict[str, Any] | None) -> dict[str, Any]:
    """Org defaults first, the request's own preferences on top; list filters are combined, not replaced."""
    prefs = dict(org_defaults or {})
    for key, value in (request or {}).items():
        if key == "ignore" and prefs.get("ignore"):
            prefs["ignore"] = list(dict.fromkeys([*prefs["ignore"], *value]))
        elif key == "data_collection" and prefs.get("data_collection") == "deny":
            continue  # an org that denies data collection cannot be overridden per request
        else:
            prefs[key] = value
    unknown = set(prefs) - PREF_KEYS
    if unknown:
        raise BadRequest(
            f"provider: unknown preference(s) {', '.join(sorted(unknown))}", metadata={"field": "provider"}
        )
    for key in ("order", "only", "ignore", "quantizations"):
        if key in prefs and (
            not isinstance(prefs[key], list) or not all(isinstance(s, str) for s in prefs[key])
        ):
            raise BadRequest(
                f"provider.{key}: must be a list of strings", metadata={"field": f"provider.{key}"}
            )
    if prefs.get("sort") not in (None, "price", "throughput", "latency"):
        raise BadRequest(
            'provider.sort: must be "price", "throughput" or "latency"', metadata={"field": "provider.sort"}
        )
    if prefs.get("data_collection") not in (None, "allow", "deny"):
        raise BadRequest(
            'provider.data_collection: must be "allow" or "deny"',
            metadata={"field": "provider.data_collection"},
        )
    if "max_price" in prefs and not isinstance(prefs["max_price"], dict):
        raise BadRequest("provider.max_price: must be an object", metadata={"field": "provider.max_price"})
    return prefs


def _requested_parameters(req: dict[str, Any]) -> set[str]:
    return {f for f in PARAMETER_FIELDS if req.get(f) is not None}


def _price_units(value: Any, per_million: bool) -> int | None:
    from decimal import Decimal, InvalidOperation

    try:
        usd = Decimal(str(value))
    except InvalidOperation:
        raise BadRequest(
            "provider.max_price: prices must be numbers", metadata={"field": "provider.max_price"}
        )
    units = usd * 10**12
    return int(units / 10**6) if per_million else int(units)


def _filter(
    ep: EndpointInfo,
    req: dict[str, Any],
    prefs: dict[str, Any],
    variant: str | None,
    prompt_estimate: int,
    reasons: dict[str, str],
) -> bool:
    slug = ep.provider_slug

    def drop(reason: str) -> bool:
        reasons[slug] = reason
        return False

    if variant == "free" and not ep.is_free:
        return drop("not free")
    if prefs.get("only") and slug not in prefs["only"] and ep.provider_name not in prefs["only"]:
        return drop("not in provider.only")
    if slug in (prefs.get("ignore") or []) or ep.provider_name in (prefs.get("ignore") or []):
        return drop("in provider.ignore")
    if prefs.get("quantizations") and (ep.quantization or "unknown") not in prefs["quantizations"]:
        return drop("quantization not allowed")
    if prefs.get("data_collection") == "deny" and ep.data_policy.get("training", False):
        return drop("provider may train on prompts")
    if prefs.get("zdr") and not ep.data_policy.get("zdr", False):
        return drop("no zero data retention")
    max_price = prefs.get("max_price") or {}
    for field, units, per_million in (
        ("prompt", ep.prompt_units, True),
        ("completion", ep.completion_units, True),
        ("request", ep.request_units, False),
        ("image", ep.image_units, False),
    ):
        if field in max_price and units > (_price_units(max_price[field], per_million) or 0):
            return drop(f"{field} price above max_price")
    wanted = _requested_parameters(req)
    if req.get("tools") and ep.supported_parameters and "tools" not in ep.supported_parameters:
        return drop("does not support tools")
    if prefs.get("require_parameters") and ep.supported_parameters:
        missing = wanted - ep.supported_parameters
        if missing:
            return drop(f"does not support {', '.join(sorted(missing))}")
    max_tokens = req.get("max_tokens") or 0
    if ep.max_completion_tokens and max_tokens > ep.max_completion_tokens:
        return drop(f"max_tokens above the endpoint's limit of {ep.max_completion_tokens}")
    if ep.context_length and prompt_estimate + max_tokens > ep.context_length:
        return drop("prompt and max_tokens exceed the context length")
    return True


def _price_key(ep: EndpointInfo) -> int:
    # A blended price per token, weighted towards prompt tokens as typical traffic is.
    return 3 * ep.prompt_units + ep.completion_units + ep.request_units


def _order(
    endpoints: list[EndpointInfo], prefs: dict[str, Any], variant: str | None, rng: random.Random
) -> list[EndpointInfo]:
    sort = prefs.get("sort") or prefs.get("sort_by")
    if variant == "floor":
        sort = "price"
    if variant == "nitro":
        sort = "throughput"
    if sort in ("price", "throughput", "latency"):
        # Throughput and latency ordering come from live health; until it is known, price decides.
        ordered = sorted(endpoints, key=lambda e: (_price_key(e), e.provider_slug))
    else:
        # Default: weighted random by inverse square of price, so the cheapest gets most traffic.
        weighted = []
        for ep in endpoints:
            price = _price_key(ep)
            weight = 1.0 / (price * price) if price else float("inf")
            weighted.append((ep, weight))
        free = [ep for ep, w in weighted if w == float("inf")]
        paid = [(ep, w) for ep, w in weighted if w != float("inf")]
        ordered = list(free)
        while paid:
            total = sum(w for _, w in paid)
            pick = rng.random() * total
            for i, (ep, w) in enumerate(paid):
                pick -= w
                if pick <= 0 or i == len(paid) - 1:
                    ordered.append(ep)
                    paid.pop(i)
                    break
    order = prefs.get("order") or []
    if order:
        rank = {slug: i for i, slug in enumerate(order)}
        first = sorted((e for e in ordered if e.provider_slug in rank), key=lambda e: rank[e.provider_slug])
        rest = [e for e in ordered if e.provider_slug not in rank]
        ordered = first + rest if prefs.get("allow_fallbacks", True) else first
    elif prefs.get("allow_fallbacks") is False:
        ordered = ordered[:1]
    return ordered


def _apply_breakers(endpoints: list[EndpointInfo]) -> list[EndpointInfo]:
    """Half-open probes first, healthy endpoints in their order, open circuits only as a last resort."""
    from routing.health import book

    now = time.time()
    probes, healthy, tripped = [], [], []
    for ep in endpoints:
        state = book.state(ep.id, now)
        if state == "closed":
            healthy.append(ep)
        elif state == "half_open" and book.allows(ep.id, now):
            probes.append(ep)
        else:
            tripped.append(ep)
    return probes + healthy + tripped


def plan(
    snapshot: Snapshot,
    req: dict[str, Any],
    *,
    org_defaults: dict[str, Any] | None = None,
    prompt_estimate: int = 0,
    rng: random.Random | None = None,
) -> list[Candidate]:
    """All candidates for the request, in the order to try them (model fallbacks last)."""
    rng = rng or random.Random()
    prefs = merge_preferences(org_defaults or {}, req.get("provider"))
    known_any = False
    candidates: list[Candidate] = []
    reasons: dict[str, str] = {}
    for requested in req["_models"]:
        slug, variant = split_variant(requested)
        model = snapshot.models.get(slug)
        if model is None:
            continue
        known_any = True
        if req["_kind"] == "chat" and "text" not in model.output_modalities:
            continue
        if (req["_kind"] == "embedding") != ("embeddings" in model.output_modalities):
            continue
        fitting = [ep for ep in model.endpoints if _filter(ep, req, prefs, variant, prompt_estimate, reasons)]
        ordered = _apply_breakers(_order(fitting, prefs, variant, rng))
        candidates.extend(Candidate(model, ep) for ep in ordered)
    if not known_any:
        names = ", ".join(req["_models"])
        raise NotFound(
            f"Model {names} does not exist. See GET /api/v1/models for the catalog.",
            metadata={"models": req["_models"]},
        )
    if not candidates:
        raise NoProviderAvailable(
            "No provider can serve this request with the given preferences.",
            metadata={"models": req["_models"], "excluded": reasons},
        )
    return candidates
