"""Candidate selection and ordering: which endpoints may serve a request, and in what order to try them.

`plan()` is pure and synchronous (catalog snapshot + request + live health held in memory): filter each
requested model's endpoints by what the request needs and by its `provider` preferences (merged over
the organisation's defaults), order them, then put endpoints with an open circuit last. `route()` is the
gateway's entry point: `plan()` plus sticky routing for prompt caching (one Redis read, only for long
prompts where a provider cache can pay off).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from routing.catalog.parameters import REQUESTED_BY_FIELD
from routing.catalog.snapshot import EndpointInfo, ModelInfo, Snapshot
from routing.health import book, sticky_context
from routing.request import Request
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
SORTS = ("price", "throughput", "latency")
QUANTIZATIONS = {"int4", "int8", "fp4", "fp6", "fp8", "fp16", "bf16", "fp32", "unknown"}
MAX_PRICE_FIELDS = ("prompt", "completion", "request", "image")
PERCENTILES = ("p50", "p75", "p90", "p99")
# The load balancer prices "this request": its estimated prompt plus this many completion tokens
# (fewer when max_tokens says so), plus any per-request price.
TYPICAL_COMPLETION_TOKENS = 256


@dataclass(frozen=True, slots=True)
class Candidate:
    model: ModelInfo
    endpoint: EndpointInfo


def split_variant(slug: str) -> tuple[str, str | None]:
    base, sep, variant = slug.rpartition(":")
    if sep and variant in VARIANTS:
        return base, variant
    return slug, None


# ---- preferences ----------------------------------------------------------------------------------


MAX_PREFERENCE_NUMBER = Decimal("1e15")


def _bad(field: str, message: str) -> BadRequest:
    return BadRequest(f"provider.{field}: {message}", metadata={"field": f"provider.{field}"})


def _number(field: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _bad(field, "must be a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise _bad(field, "must be a number")
    if not number.is_finite() or number < 0:
        raise _bad(field, "must be a number >= 0")
    # Far above any real price or throughput, and small enough that arithmetic on it (USD per million
    # to picodollars per token) can never overflow the decimal context.
    if number > MAX_PREFERENCE_NUMBER:
        raise _bad(field, f"must be at most {MAX_PREFERENCE_NUMBER:.0e}")
    return number


def _cutoffs(field: str, value: Any) -> dict[str, float]:
    """A number (the p50 cutoff) or an object of percentile cutoffs, as OpenRouter takes them."""
    if isinstance(value, dict):
        unknown = set(value) - set(PERCENTILES)
        if unknown:
            raise _bad(
                field, f"unknown percentile(s) {', '.join(sorted(unknown))}; use {', '.join(PERCENTILES)}"
            )
        return {p: float(_number(f"{field}.{p}", v)) for p, v in value.items() if v is not None}
    return {"p50": float(_number(field, value))}


def validate_preferences(prefs: dict[str, Any]) -> dict[str, Any]:
    """Check a `provider` object's fields and types; a 400 names the first bad field."""
    if not isinstance(prefs, dict):
        raise BadRequest("provider: must be an object of routing preferences", metadata={"field": "provider"})
    unknown = set(prefs) - PREF_KEYS
    if unknown:
        raise BadRequest(
            f"provider: unknown preference(s) {', '.join(sorted(unknown))}", metadata={"field": "provider"}
        )
    out = {k: v for k, v in prefs.items() if v is not None}
    for key in ("order", "only", "ignore", "quantizations"):
        if key in out and (not isinstance(out[key], list) or not all(isinstance(s, str) for s in out[key])):
            raise _bad(key, "must be a list of strings")
    bad_quant = set(out.get("quantizations") or ()) - QUANTIZATIONS
    if bad_quant:
        raise _bad("quantizations", f"unknown level(s) {', '.join(sorted(bad_quant))}")
    for key in ("allow_fallbacks", "require_parameters", "zdr"):
        if key in out and not isinstance(out[key], bool):
            raise _bad(key, "must be true or false")
    if out.get("data_collection") not in (None, "allow", "deny"):
        raise _bad("data_collection", 'must be "allow" or "deny"')
    for key in ("sort", "sort_by"):
        sort = out.get(key)
        if isinstance(sort, dict):
            if sort.get("by") not in SORTS:
                raise _bad(f"{key}.by", 'must be "price", "throughput" or "latency"')
            if sort.get("partition") not in (None, "model", "none"):
                raise _bad(f"{key}.partition", 'must be "model" or "none"')
        elif sort is not None and sort not in SORTS:
            raise _bad(key, 'must be "price", "throughput" or "latency"')
    if "max_price" in out:
        max_price = out["max_price"]
        if not isinstance(max_price, dict):
            raise _bad("max_price", "must be an object with prompt, completion, request and/or image")
        unknown = set(max_price) - set(MAX_PRICE_FIELDS)
        if unknown:
            raise _bad("max_price", f"unknown field(s) {', '.join(sorted(unknown))}")
        out["max_price"] = {k: _number(f"max_price.{k}", v) for k, v in max_price.items() if v is not None}
    for key in ("preferred_min_throughput", "preferred_max_latency"):
        if key in out:
            out[key] = _cutoffs(key, out[key])
    return out


def merge_preferences(org_defaults: dict[str, Any], request: dict[str, Any] | None) -> dict[str, Any]:
    """The organisation's defaults with the request's preferences on top.

    The organisation's restrictions hold whatever the request says: `ignore` lists are combined,
    `only` lists intersected, `data_collection: "deny"` and `zdr: true` stay, and each `max_price`
    field keeps the lower of the two. Everything else in the request replaces the default."""
    if not org_defaults and not request:
        return {}  # the common case, kept off the hot path's profile
    org = validate_preferences(dict(org_defaults or {}))
    req = validate_preferences(dict(request or {}))
    prefs = dict(org)
    for key, value in req.items():
        if key == "ignore" and org.get("ignore"):
            prefs["ignore"] = list(dict.fromkeys([*org["ignore"], *value]))
        elif key == "only" and org.get("only"):
            prefs["only"] = [s for s in value if s in org["only"]]
        elif key == "data_collection" and org.get("data_collection") == "deny":
            continue
        elif key == "zdr" and org.get("zdr"):
            continue
        elif key == "max_price" and org.get("max_price"):
            merged = dict(org["max_price"])
            for field, limit in value.items():
                merged[field] = min(limit, merged.get(field, limit))
            prefs["max_price"] = merged
        else:
            prefs[key] = value
    return prefs


def _sort_spec(prefs: dict[str, Any], variant: str | None) -> tuple[str | None, str]:
    """(sort by, partition) from the preferences and the model variant (:floor, :nitro)."""
    sort = prefs.get("sort") or prefs.get("sort_by")
    partition = "model"
    if isinstance(sort, dict):
        partition = sort.get("partition") or "model"
        sort = sort["by"]
    if variant == "floor":
        sort = "price"
    elif variant == "nitro":
        sort = "throughput"
    return sort, partition


# ---- filtering ------------------------------------------------------------------------------------


def _requested_parameters(req: Request) -> set[str]:
    fields = req.fields
    return {name for field, name in REQUESTED_BY_FIELD.items() if fields.get(field) is not None}


def _per_token_units(usd_per_million: Decimal) -> Decimal:
    return usd_per_million * 10**12 / 10**6


def _max_price_excludes(ep: EndpointInfo, max_price: dict[str, Decimal]) -> str | None:
    if not max_price:
        return None
    # prompt and completion are USD per million tokens; request and image USD per unit (OpenRouter's).
    for field, units, limit in (
        ("prompt", ep.prompt_units, _per_token_units(max_price["prompt"]) if "prompt" in max_price else None),
        (
            "completion",
            ep.completion_units,
            _per_token_units(max_price["completion"]) if "completion" in max_price else None,
        ),
        ("request", ep.request_units, max_price["request"] * 10**12 if "request" in max_price else None),
        ("image", ep.image_units, max_price["image"] * 10**12 if "image" in max_price else None),
    ):
        if limit is not None and units > limit:
            return f"{field} price above provider.max_price.{field}"
    return None


NO_KEY = "no platform key: "


def _exclusion(
    model: ModelInfo,
    ep: EndpointInfo,
    req: Request,
    prefs: dict[str, Any],
    variant: str | None,
    prompt_estimate: int,
    keyed: frozenset[str],
) -> str | None:
    """Why this endpoint cannot serve the request, or None when it can."""
    slug, name = ep.provider_slug, ep.provider_name
    key_env = ep.missing_key_env()
    if key_env and slug not in keyed:
        # Trying it would only send an empty key upstream and fail there, seconds later.
        return f"{NO_KEY}{key_env} is not set"
    if variant == "free" and not ep.is_free:
        return "not free (:free variant)"
    if "only" in prefs and slug not in prefs["only"] and name not in prefs["only"]:
        return "not in provider.only"
    if slug in (prefs.get("ignore") or ()) or name in (prefs.get("ignore") or ()):
        return "in provider.ignore"
    if prefs.get("quantizations") and (ep.quantization or "unknown") not in prefs["quantizations"]:
        return f"quantization {ep.quantization or 'unknown'} not in provider.quantizations"
    if prefs.get("data_collection") == "deny" and ep.data_policy.get("training", False):
        return "provider may train on prompts (provider.data_collection is deny)"
    if prefs.get("zdr") and not ep.data_policy.get("zdr", False):
        return "no zero data retention (provider.zdr)"
    reason = _max_price_excludes(ep, prefs.get("max_price") or {})
    if reason:
        return reason
    params = ep.supported_parameters
    if req.tools and params and "tools" not in params:
        return "does not support tools"
    fmt = req.response_format.get("type") if isinstance(req.response_format, dict) else None
    if (
        fmt in ("json_object", "json_schema")
        and params
        and not params & {"response_format", "structured_outputs"}
    ):
        return "does not support JSON mode (response_format)"
    if req.images and "image" not in model.input_modalities:
        return "model does not accept image input"
    if prefs.get("require_parameters"):
        missing = _requested_parameters(req) - params
        if missing:
            return f"does not support {', '.join(sorted(missing))} (provider.require_parameters)"
    max_tokens = req.max_tokens or 0
    if ep.max_completion_tokens and max_tokens > ep.max_completion_tokens:
        return f"max_tokens above the endpoint's limit of {ep.max_completion_tokens}"
    if ep.context_length and prompt_estimate + max_tokens > ep.context_length:
        return f"prompt and max_tokens exceed the context length of {ep.context_length}"
    return None


# ---- ordering -------------------------------------------------------------------------------------


def request_cost(ep: EndpointInfo, prompt_tokens: int, completion_tokens: int) -> int:
    """This request's price at an endpoint, in picodollars: what the load balancer weighs."""
    return prompt_tokens * ep.prompt_units + completion_tokens * ep.completion_units + ep.request_units


def weighted_shuffle(items: list[Any], cost: Callable[[Any], int], rng: random.Random) -> list[Any]:
    """A random order in which each item comes first with probability proportional to 1 / cost^2.

    Weighted sampling without replacement (Efraimidis & Spirakis): sort by u^(1/w), computed as
    log(u) * cost^2 to stay in range. Free items (cost 0) come first, in random order."""
    if len(items) < 2:
        return list(items)  # nothing to shuffle (most models have one endpoint, and `shaky` is usually empty)
    costs = [cost(i) for i in items]
    paid = [c for c in costs if c > 0]
    base = min(paid) if paid else 1
    keyed = []
    for item, c in zip(items, costs, strict=True):
        u = 1.0 - rng.random()  # (0, 1]
        keyed.append((math.inf if c == 0 else math.log(u) * (c / base) ** 2, rng.random(), item))
    keyed.sort(key=lambda k: (k[0], k[1]), reverse=True)
    return [item for _, _, item in keyed]


def _order(
    endpoints: list[EndpointInfo],
    prefs: dict[str, Any],
    sort: str | None,
    cost: Callable[[EndpointInfo], int],
    rng: random.Random,
    now: float,
) -> list[EndpointInfo]:
    if sort in SORTS:
        ordered = sorted(endpoints, key=lambda e: _sort_key(e, sort, cost))
    else:
        # Default: price-weighted load balancing among endpoints without significant failures in the
        # last 30 seconds; the shaky ones after them, so they still serve as fallbacks.
        stable: list[EndpointInfo] = []
        shaky: list[EndpointInfo] = []
        for e in endpoints:
            (shaky if book.degraded(e.id, now) else stable).append(e)
        ordered = weighted_shuffle(stable, cost, rng) + weighted_shuffle(shaky, cost, rng)

    order = prefs.get("order") or []
    if order:
        rank = {slug: i for i, slug in enumerate(order)}
        first = sorted(
            (e for e in ordered if e.provider_slug in rank or e.provider_name in rank),
            key=lambda e: rank.get(e.provider_slug, rank.get(e.provider_name, 0)),
        )
        rest = [e for e in ordered if e not in first]
        ordered = first + rest if prefs.get("allow_fallbacks", True) else first
    elif prefs.get("allow_fallbacks") is False:
        ordered = ordered[:1]
    return ordered


def _sort_key(ep: EndpointInfo, sort: str | None, cost: Callable[[EndpointInfo], int]) -> tuple[Any, ...]:
    """Sort keys; an endpoint not measured yet goes after the measured ones, cheapest first."""
    if sort == "throughput":
        tps = book.perf_of(ep.id).throughput
        return (tps is None, -(tps or 0.0), cost(ep), ep.provider_slug)
    if sort == "latency":
        lat = book.perf_of(ep.id).latency_ms
        return (lat is None, lat or 0.0, cost(ep), ep.provider_slug)
    return (cost(ep), ep.provider_slug)


def _meets_performance(ep: EndpointInfo, prefs: dict[str, Any]) -> bool:
    """preferred_min_throughput / preferred_max_latency (seconds) against the endpoint's moving
    averages; every given percentile cutoff is compared with the one average we keep. Unmeasured
    endpoints meet them (they cannot be judged yet)."""
    perf = book.perf_of(ep.id)
    for cutoff in (prefs.get("preferred_min_throughput") or {}).values():
        if perf.throughput is not None and perf.throughput < cutoff:
            return False
    for cutoff in (prefs.get("preferred_max_latency") or {}).values():
        if perf.latency_ms is not None and perf.latency_ms > cutoff * 1000:
            return False
    return True


def _apply_breakers(candidates: list[Candidate], now: float) -> list[Candidate]:
    """Half-open probes first, healthy endpoints in their order, open circuits only as a last resort."""
    probes, healthy, tripped = [], [], []
    for cand in candidates:
        state = book.state(cand.endpoint.id, now)
        if state == "closed":
            healthy.append(cand)
        elif state == "half_open" and book.allows(cand.endpoint.id, now):
            probes.append(cand)
        else:
            tripped.append(cand)
    return probes + healthy + tripped


def _plan(
    snapshot: Snapshot,
    req: Request,
    org_defaults: dict[str, Any] | None,
    prompt_estimate: int,
    rng: random.Random,
    keyed: frozenset[str] = frozenset(),
) -> tuple[list[Candidate], dict[str, Any]]:
    prefs = merge_preferences(org_defaults or {}, req.provider)
    now = time.time()
    completion = min(req.max_tokens or TYPICAL_COMPLETION_TOKENS, TYPICAL_COMPLETION_TOKENS)

    def cost(ep: EndpointInfo) -> int:
        return request_cost(ep, prompt_estimate, completion)

    known_any = False
    wrong_kind: list[str] = []  # known models that do not serve this kind of request at all
    candidates: list[Candidate] = []
    reasons: dict[str, str] = {}
    global_sort: str | None = None
    for requested in req.models:
        if requested in snapshot.models:
            slug, variant = requested, None
        else:
            slug, variant = split_variant(requested)
        model = snapshot.models.get(slug)
        if model is None:
            continue
        known_any = True
        if (req.kind == "chat" and "text" not in model.output_modalities) or (
            (req.kind == "embedding") != ("embeddings" in model.output_modalities)
        ):
            wrong_kind.append(slug)
            continue
        fitting = []
        for ep in model.endpoints:
            why = _exclusion(model, ep, req, prefs, variant, prompt_estimate, keyed)
            if why is None:
                fitting.append(ep)
            else:
                name = ep.provider_slug if ep.provider_slug not in reasons else f"{slug}@{ep.provider_slug}"
                reasons.setdefault(name, why)
        sort, partition = _sort_spec(prefs, variant)
        if sort in SORTS and partition == "none" and not prefs.get("order"):
            global_sort = sort
        candidates.extend(Candidate(model, ep) for ep in _order(fitting, prefs, sort, cost, rng, now))
    if known_any and not candidates and len(wrong_kind) == len(req.models):
        what = "embeddings" if req.kind == "embedding" else "text generation"
        raise BadRequest(
            f"Model {', '.join(wrong_kind)} does not serve {what}; see its output_modalities in GET /api/v1/models.",
            metadata={"field": "model"},
        )
    if not known_any:
        names = ", ".join(req.models)
        raise NotFound(
            f"Model {names} does not exist. See GET /api/v1/models for the catalog.",
            metadata={"models": req.models},
        )
    if global_sort is not None:
        # sort.partition "none": the fallback models' endpoints compete with the first model's.
        candidates.sort(key=lambda c: _sort_key(c.endpoint, global_sort, cost))
    if prefs.get("preferred_min_throughput") or prefs.get("preferred_max_latency"):
        # Deprioritised, not excluded; across models, so a fallback model that meets them goes first.
        meets = [c for c in candidates if _meets_performance(c.endpoint, prefs)]
        candidates = meets + [c for c in candidates if c not in meets]
    candidates = _apply_breakers(candidates, now)
    if not candidates:
        raise NoProviderAvailable(
            _no_provider_message(reasons), metadata={"models": req.models, "excluded": reasons}
        )
    return candidates, prefs


def _no_provider_message(reasons: dict[str, str]) -> str:
    """The 503's message; it names the platform-key variables when their absence excluded endpoints."""
    missing = sorted(
        {why.removeprefix(NO_KEY).split(" ", 1)[0] for why in reasons.values() if why.startswith(NO_KEY)}
    )
    if not missing:
        return "No provider can serve this request with the given preferences."
    names = " and ".join(missing)
    if all(why.startswith(NO_KEY) for why in reasons.values()):
        return (
            f"No provider can serve this model here: {names} {'is' if len(missing) == 1 else 'are'} not set "
            "on the server (the operator sets the platform key; or add your organisation's own key under "
            "Settings → Provider keys)."
        )
    return (
        "No provider can serve this request with the given preferences "
        f"(endpoints without a platform key were skipped: {names} not set)."
    )


def plan(
    snapshot: Snapshot,
    req: Request,
    *,
    org_defaults: dict[str, Any] | None = None,
    prompt_estimate: int = 0,
    rng: random.Random | None = None,
    keyed_providers: frozenset[str] = frozenset(),
) -> list[Candidate]:
    """All candidates for the request, in the order to try them (model fallbacks after, unless a
    `sort` with `partition: "none"` or a performance preference mixes them). Endpoints whose platform
    key is not set are excluded unless their provider is in `keyed_providers` (the organisation's BYOK)."""
    return _plan(snapshot, req, org_defaults, prompt_estimate, rng or random.Random(), keyed_providers)[0]


# ---- sticky routing -------------------------------------------------------------------------------


def _caches(ep: EndpointInfo) -> bool:
    """Prompt caching pays at this endpoint: cache reads are priced below fresh prompt tokens."""
    return 0 < ep.cache_read_units < ep.prompt_units


def sticky_key(org_id: int, model: str, opening: str) -> str:
    """The sticky-routing key of an organisation's conversation (its opening: routing.request)."""
    raw = f"{org_id}\x00{model}\x00{opening}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


async def route(
    snapshot: Snapshot,
    req: Request,
    *,
    org_id: int,
    org_defaults: dict[str, Any] | None = None,
    prompt_estimate: int = 0,
    rng: random.Random | None = None,
    keyed_providers: frozenset[str] = frozenset(),
) -> list[Candidate]:
    """`plan()`, then sticky routing: an organisation's repeated requests to a model with the same
    opening go to the endpoint that answered last time while it is healthy, so its prompt cache hits.

    Only for the default load balancing (no `order`, no `sort`), prompts of at least
    SWITCHYARD_STICKY_MIN_PROMPT_TOKENS (providers cache nothing shorter) and endpoints whose cache
    reads are cheaper than fresh prompt tokens. The endpoint that answers is remembered for
    SWITCHYARD_STICKY_TTL_SECONDS when the request settles (routing.health)."""
    sticky_context.set(None)
    candidates, prefs = _plan(
        snapshot, req, org_defaults, prompt_estimate, rng or random.Random(), keyed_providers
    )
    if (
        prefs.get("order")
        or prefs.get("sort")
        or prefs.get("sort_by")
        or req.opening is None  # too short for a provider to cache (routing.request)
        or len(candidates) < 2
    ):
        return candidates
    primary = candidates[0].model.slug
    if not any(_caches(c.endpoint) for c in candidates if c.model.slug == primary):
        return candidates
    key = sticky_key(org_id, req.models[0], req.opening)
    sticky_context.set(key)
    remembered = await book.sticky_get(key)
    if remembered is None:
        return candidates
    now = time.time()
    for i, cand in enumerate(candidates):
        ep = cand.endpoint
        if ep.id == remembered and cand.model.slug == primary:
            if _caches(ep) and book.state(ep.id, now) == "closed" and not book.degraded(ep.id, now):
                return [cand, *candidates[:i], *candidates[i + 1 :]]
            break
    return candidates
