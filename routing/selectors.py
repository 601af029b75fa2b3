"""Reads of the catalog (OpenRouter's shapes) and of generation records, scoped by organisation."""

from __future__ import annotations

import time
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, F, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from routing.catalog.snapshot import EndpointInfo, ModelInfo, Snapshot
from routing.models import Generation, Provider, ProviderKey
from switchyard.money import UNITS_PER_USD, from_units, json_number, price_str
from switchyard.shared import redis_enabled, sync_redis


def _per_token(units: int) -> str:
    return price_str(Decimal(units) / UNITS_PER_USD)


def _pricing(ep: EndpointInfo | None) -> dict[str, str]:
    if ep is None:
        return {"prompt": "0", "completion": "0", "request": "0", "image": "0"}
    pricing = {
        "prompt": _per_token(ep.prompt_units),
        "completion": _per_token(ep.completion_units),
        "request": _per_token(ep.request_units),
        "image": _per_token(ep.image_units),
        "web_search": "0",
        "internal_reasoning": _per_token(ep.reasoning_units),
    }
    if ep.cache_read_units:
        pricing["input_cache_read"] = _per_token(ep.cache_read_units)
    if ep.cache_write_units:
        pricing["input_cache_write"] = _per_token(ep.cache_write_units)
    return pricing


def _architecture(m: ModelInfo) -> dict[str, Any]:
    return {
        "modality": "+".join(m.input_modalities) + "->" + "+".join(m.output_modalities),
        "input_modalities": list(m.input_modalities),
        "output_modalities": list(m.output_modalities),
        "tokenizer": m.slug.split("/", 1)[0].capitalize(),
        "instruct_type": None,
    }


def cheapest_endpoint(m: ModelInfo) -> EndpointInfo | None:
    if not m.endpoints:
        return None
    return min(m.endpoints, key=lambda e: (e.prompt_units + e.completion_units, e.provider_slug))


def _unavailable_reason(endpoints: tuple[EndpointInfo, ...] | list[EndpointInfo]) -> str | None:
    """Why none of these endpoints can answer on this server (their platform keys are not set), or None
    when one can. Organisations with their own key (BYOK) for the provider can still use them."""
    missing = [ep.missing_key_env() for ep in endpoints]
    if not endpoints or not all(missing):
        return None
    return f"no platform key on this server: {', '.join(sorted(set(missing)))} not set (BYOK still works)"


def _listed(m: ModelInfo) -> bool:
    """Whether the catalog readers show the model: it has endpoints, and it can answer here unless
    SWITCHYARD_HIDE_UNAVAILABLE_MODELS is on (the admin's switch to hide models without a platform key)."""
    if not m.endpoints:
        return False
    return not (settings.SWITCHYARD_HIDE_UNAVAILABLE_MODELS and _unavailable_reason(m.endpoints))


def model_list(*, snapshot: Snapshot, search: str | None = None) -> list[dict[str, Any]]:
    out = []
    for m in snapshot.models.values():
        if not _listed(m):
            continue
        if search and search.lower() not in (m.slug + " " + m.name).lower():
            continue
        top = cheapest_endpoint(m)
        reason = _unavailable_reason(m.endpoints)
        params: set[str] = set()
        for ep in m.endpoints:
            params |= ep.supported_parameters
        out.append(
            {
                "id": m.slug,
                "canonical_slug": m.slug,
                "name": m.name,
                "created": m.created,
                "description": m.description,
                "context_length": m.context_length,
                "architecture": _architecture(m),
                "pricing": _pricing(top),
                "top_provider": {
                    "context_length": top.context_length if top else m.context_length,
                    "max_completion_tokens": top.max_completion_tokens if top else None,
                    "is_moderated": False,
                },
                "per_request_limits": None,
                "supported_parameters": sorted(params),
                # Not OpenRouter's: whether this server can answer for the model (a platform key is set).
                "available": reason is None,
                "unavailable_reason": reason,
            }
        )
    return out


def model_endpoints(
    *, snapshot: Snapshot, slug: str, health: dict[int, dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    m = snapshot.models.get(slug)
    if m is None:
        return None
    health = health or {}
    endpoints = []
    for ep in sorted(m.endpoints, key=lambda e: (e.prompt_units + e.completion_units, e.provider_slug)):
        stats = health.get(ep.id, {})
        endpoints.append(
            {
                "name": f"{ep.provider_name} | {m.slug}",
                "model_name": m.name,
                "provider_name": ep.provider_name,
                "tag": ep.provider_slug,
                "context_length": ep.context_length,
                "max_completion_tokens": ep.max_completion_tokens,
                "max_prompt_tokens": None,
                "quantization": ep.quantization or None,
                "pricing": _pricing(ep),
                "supported_parameters": sorted(ep.supported_parameters),
                # OpenRouter's name for a provider that caches on its own; ours for `cache_control`.
                "supports_implicit_caching": ep.prompt_caching == "implicit",
                "supports_explicit_caching": ep.explicit_caching,
                "data_policy": ep.data_policy,
                "status": 0,
                "uptime_last_30m": stats.get("uptime"),
                "latency_last_30m": stats.get("latency_ms"),
                "throughput_last_30m": stats.get("throughput"),
                "ttft_last_30m": stats.get("ttft_ms"),
                "requests_last_30m": stats.get("requests", 0),
                "circuit": stats.get("circuit", "closed"),
                "available": not ep.missing_key_env(),
                "unavailable_reason": _unavailable_reason([ep]),
            }
        )
    return {
        "id": m.slug,
        "name": m.name,
        "created": m.created,
        "description": m.description,
        "architecture": _architecture(m),
        "endpoints": endpoints,
    }


def generation_get(*, organization_id: int, generation_id: str) -> Generation | None:
    if "\x00" in generation_id:  # no id holds a NUL, and PostgreSQL refuses to compare with one
        return None
    return Generation.objects.filter(organization_id=organization_id, pk=generation_id).first()


def generation_pending(*, organization_id: int, generation_id: str) -> Generation | None:
    """A settled generation whose row the usage drain has not written yet (full mode), unsaved."""
    from billing.holds import pending_generation_event
    from billing.usage import generation_fields

    ev = pending_generation_event(generation_id)
    if ev is None or ev.get("org") != organization_id:
        return None
    try:
        return Generation(id=generation_id, **generation_fields(ev))
    except ValueError:  # an event the writer will park: it has no record to show
        return None


def generation_data(g: Generation) -> dict[str, Any]:
    return {
        "id": g.id,
        "model": g.model,
        "provider_name": g.provider or None,
        "api_type": "completions" if g.kind == "completion" else g.kind,
        "status": g.status,
        "tokens_prompt": g.tokens_prompt,
        "tokens_completion": g.tokens_completion,
        "native_tokens_prompt": g.tokens_prompt,
        "native_tokens_completion": g.tokens_completion,
        "native_tokens_cached": g.tokens_cached,
        "native_tokens_reasoning": g.tokens_reasoning,
        "usage_estimated": g.usage_estimated,
        "total_cost": json_number(from_units(g.cost_units)),
        "usage": json_number(from_units(g.cost_units)),
        "latency": g.latency_ms,
        "moderation_latency": None,
        "generation_time": g.generation_time_ms,
        "time_to_first_token": g.ttft_ms,
        "finish_reason": g.finish_reason or None,
        "native_finish_reason": g.native_finish_reason or None,
        "streamed": g.streamed,
        "cancelled": g.cancelled,
        "error": g.error or None,
        "created_at": g.created_at.isoformat(),
        "attempts": g.attempts,
        "is_byok": g.is_byok,
    }


# --- Dashboard and public pages ------------------------------------------------------------------

ALL_REQUESTS = "All requests"

MODEL_SORTS = {
    "name": "Name",
    "price": "Price: low to high",
    "-price": "Price: high to low",
    "-context": "Context: largest first",
    "context": "Context: smallest first",
}


def _per_million(units: int) -> Decimal:
    """Picodollars per token -> USD per million tokens."""
    return (Decimal(units) / 1_000_000).normalize()


def _endpoint_row(ep: EndpointInfo) -> dict[str, Any]:
    return {
        "id": ep.id,
        "provider_slug": ep.provider_slug,
        "provider_name": ep.provider_name,
        "prompt": _per_million(ep.prompt_units),
        "completion": _per_million(ep.completion_units),
        "cache_read": _per_million(ep.cache_read_units) if ep.cache_read_units else None,
        "cache_write": _per_million(ep.cache_write_units) if ep.cache_write_units else None,
        "request": (Decimal(ep.request_units) / UNITS_PER_USD).normalize() if ep.request_units else None,
        "image": (Decimal(ep.image_units) / UNITS_PER_USD).normalize() if ep.image_units else None,
        "context_length": ep.context_length,
        "max_completion_tokens": ep.max_completion_tokens,
        "quantization": ep.quantization,
        "supported_parameters": sorted(ep.supported_parameters),
        "data_policy": ep.data_policy,
        "is_free": ep.is_free,
        "missing_key_env": ep.missing_key_env(),
    }


def _model_row(m: ModelInfo) -> dict[str, Any]:
    top = cheapest_endpoint(m)
    return {
        "slug": m.slug,
        "author": m.slug.split("/", 1)[0],
        "short": m.slug.split("/", 1)[-1],
        "name": m.name,
        "description": m.description,
        "context_length": max([m.context_length, *(e.context_length for e in m.endpoints)]),
        "input_modalities": list(m.input_modalities),
        "output_modalities": list(m.output_modalities),
        "prompt": _per_million(top.prompt_units) if top else Decimal(0),
        "completion": _per_million(top.completion_units) if top else Decimal(0),
        "providers": sorted({e.provider_name for e in m.endpoints}),
        "provider_slugs": sorted({e.provider_slug for e in m.endpoints}),
        "endpoint_count": len(m.endpoints),
        "is_free": bool(top and top.is_free),
        "unavailable_reason": _unavailable_reason(m.endpoints),
    }


def catalog_browse(
    *,
    snapshot: Snapshot,
    search: str = "",
    author: str = "",
    provider: str = "",
    modality: str = "",
    min_context: int | None = None,
    max_price: Decimal | None = None,
    sort: str = "name",
) -> list[dict[str, Any]]:
    """Models that have at least one endpoint, filtered and sorted for the models browser.

    `max_price` is USD per million prompt tokens at the model's cheapest endpoint; `modality` matches
    an input or output modality (text, image, audio, ...).
    """
    rows = []
    needle = search.strip().lower()
    for m in snapshot.models.values():
        if not _listed(m):
            continue
        if needle and needle not in f"{m.slug} {m.name} {m.description}".lower():
            continue
        row = _model_row(m)
        if author and row["author"] != author:
            continue
        if provider and provider not in row["provider_slugs"]:
            continue
        if modality and modality not in row["input_modalities"] and modality not in row["output_modalities"]:
            continue
        if min_context and row["context_length"] < min_context:
            continue
        if max_price is not None and row["prompt"] > max_price:
            continue
        rows.append(row)
    key_funcs = {
        "name": lambda r: (r["name"].lower(),),
        "price": lambda r: (r["prompt"] + r["completion"], r["name"].lower()),
        "-price": lambda r: (-(r["prompt"] + r["completion"]), r["name"].lower()),
        "context": lambda r: (r["context_length"], r["name"].lower()),
        "-context": lambda r: (-r["context_length"], r["name"].lower()),
    }
    rows.sort(key=key_funcs.get(sort, key_funcs["name"]))
    return rows


_provider_names: dict[str, Any] = {"snapshot": None, "names": {}}


def provider_names(*, snapshot: Snapshot) -> dict[str, str]:
    """Provider slug → display name ("simulated" → "Switchyard Simulator"), built once per snapshot.

    Providers without enabled endpoints are not in the snapshot; their rows still name them."""
    if _provider_names["snapshot"] is not snapshot:
        names = dict(Provider.objects.values_list("slug", "name"))
        names.update(catalog_facets(snapshot=snapshot)["providers"])
        _provider_names.update(snapshot=snapshot, names=names)
    return _provider_names["names"]


def catalog_facets(*, snapshot: Snapshot) -> dict[str, Any]:
    authors: set[str] = set()
    providers: dict[str, str] = {}
    modalities: set[str] = set()
    for m in snapshot.models.values():
        if not m.endpoints:
            continue
        authors.add(m.slug.split("/", 1)[0])
        modalities.update(m.input_modalities, m.output_modalities)
        for ep in m.endpoints:
            providers[ep.provider_slug] = ep.provider_name
    return {
        "authors": sorted(authors),
        "providers": sorted(providers.items(), key=lambda p: p[1].lower()),
        "modalities": sorted(modalities),
    }


def catalog_model_count(*, snapshot: Snapshot) -> int:
    return sum(1 for m in snapshot.models.values() if _listed(m))


def catalog_model_detail(*, snapshot: Snapshot, slug: str) -> dict[str, Any] | None:
    m = snapshot.models.get(slug)
    if m is None or not m.endpoints:
        return None
    row = _model_row(m)
    row["endpoints"] = [
        _endpoint_row(ep)
        for ep in sorted(m.endpoints, key=lambda e: (e.prompt_units + e.completion_units, e.provider_slug))
    ]
    return row


def generation_list(
    *,
    organization_id: int,
    model: str = "",
    provider: str = "",
    api_key_id: int | None = None,
    member_id: int | None = None,
    status: str = "",
    date_from: date | None = None,
    date_to: date | None = None,
) -> QuerySet[Generation]:
    """The organisation's requests, newest first; `member_id` keeps those made with that user's keys."""
    qs = Generation.objects.filter(organization_id=organization_id).select_related("api_key")
    if member_id is not None:
        qs = qs.filter(api_key__created_by_id=member_id)
    if model:
        qs = qs.filter(model=model)
    if provider:
        qs = qs.filter(provider=provider)
    if api_key_id is not None:
        qs = qs.filter(api_key_id=api_key_id)
    if status:
        qs = qs.filter(status=status)
    if date_from is not None:
        qs = qs.filter(created_at__date__gte=date_from)
    if date_to is not None:
        qs = qs.filter(created_at__date__lte=date_to)
    return qs.order_by("-created_at", "-pk")


def generation_filter_options(*, organization_id: int) -> dict[str, list[str]]:
    qs = Generation.objects.filter(organization_id=organization_id)
    return {
        "models": sorted(set(qs.values_list("model", flat=True).distinct())),
        "providers": sorted({p for p in qs.values_list("provider", flat=True).distinct() if p}),
    }


# Activity's groupings: the Generation field each one totals by. Keys and members are ids (a key's
# name can repeat, a member's email can change); the page turns them into names.
USAGE_GROUPS = {
    "model": "model",
    "provider": "provider",
    "key": "api_key_id",
    "member": "api_key__created_by_id",
}
NO_GROUP = "(none)"


def _group_name(value: Any) -> str:
    return NO_GROUP if value is None or value == "" else str(value)


def usage_by_group(
    *,
    organization_id: int,
    group_by: str,
    since: date,
    filters: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Requests, tokens and spend per group (model, provider, key or member) since a day, every group
    (no "Other"), biggest spend first; `filters` are `generation_list`'s, as for `usage_by_day`."""
    field = USAGE_GROUPS[group_by]
    rows = (
        generation_list(organization_id=organization_id, **(filters or {}))
        .filter(created_at__date__gte=since)
        .order_by()
        .values(field)
        .annotate(
            cost=Sum("cost_units"),
            tokens=Sum(F("tokens_prompt") + F("tokens_completion")),
            requests=Count("id"),
        )
    )
    out = [
        {
            "group": _group_name(r[field]),
            "requests": r["requests"],
            "tokens": r["tokens"] or 0,
            "spend": from_units(r["cost"] or 0),
        }
        for r in rows
    ]
    return sorted(out, key=lambda g: (-g["spend"], -g["requests"], g["group"]))


def usage_by_day(
    *,
    organization_id: int,
    days: int = 30,
    group_by: str | None = "model",
    top: int = 6,
    today: date | None = None,
    filters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Spend, tokens and requests per day for the dashboard charts, one series per group of
    `USAGE_GROUPS` (model, provider, key or member).

    The `top` groups by spend get their own series; the rest are summed as "Other". `group_by=None`
    gives a single "All requests" series (the overview). Spend is a Decimal USD per day (exact sums of
    picodollars); days without traffic are zeros so every series lines up. `filters` are
    `generation_list`'s (model, provider, api_key_id, status, date_from, date_to), so the charts count
    exactly the requests the activity table lists.
    """
    field = None if group_by is None else USAGE_GROUPS.get(group_by, "model")
    today = today or timezone.now().date()
    start = today - timedelta(days=days - 1)
    rows = (
        generation_list(organization_id=organization_id, **(filters or {}))
        .filter(created_at__date__gte=start)
        .order_by()
        .annotate(day=TruncDate("created_at"))
        .values("day", *([field] if field else []))
        .annotate(
            cost=Sum("cost_units"),
            tokens=Sum(F("tokens_prompt") + F("tokens_completion")),
            requests=Count("id"),
        )
    )
    labels = [start + timedelta(days=i) for i in range(days)]
    index = {d: i for i, d in enumerate(labels)}

    def zeros() -> dict[str, list[int]]:
        return {"cost": [0] * days, "tokens": [0] * days, "requests": [0] * days}

    # The single overall series exists even without traffic: the overview plots a flat week.
    per_group: dict[str, dict[str, list[int]]] = {} if field else {ALL_REQUESTS: zeros()}
    spend_total: dict[str, int] = {}
    for r in rows:
        group = _group_name(r[field]) if field else ALL_REQUESTS
        day = r["day"]
        if day not in index:
            continue
        series = per_group.setdefault(group, zeros())
        i = index[day]
        series["cost"][i] += r["cost"] or 0
        series["tokens"][i] += r["tokens"] or 0
        series["requests"][i] += r["requests"] or 0
        spend_total[group] = spend_total.get(group, 0) + (r["cost"] or 0)
    ranked = sorted(per_group, key=lambda g: (-spend_total.get(g, 0), -sum(per_group[g]["requests"]), g))
    keep, rest = ranked[:top], ranked[top:]
    if rest:
        other = zeros()
        for g in rest:
            for metric in other:
                other[metric] = [a + b for a, b in zip(other[metric], per_group[g][metric], strict=True)]
        per_group["Other"] = other
        keep.append("Other")
    return {
        "group_by": field,
        "labels": [d.isoformat() for d in labels],
        "series": [
            {
                "name": g,
                "spend": [from_units(u) for u in per_group[g]["cost"]],
                "tokens": per_group[g]["tokens"],
                "requests": per_group[g]["requests"],
            }
            for g in keep
        ],
        "totals": {
            "spend": from_units(sum(sum(per_group[g]["cost"]) for g in keep)),
            "tokens": sum(sum(per_group[g]["tokens"]) for g in keep),
            "requests": sum(sum(per_group[g]["requests"]) for g in keep),
        },
    }


def usage_chart_data(usage: dict[str, Any]) -> dict[str, Any]:
    """`usage_by_day` as the JSON the dashboard's charts embed.

    Chart.js wants numbers; spend goes out as exact decimal strings and is parsed in the browser for
    plotting only.
    """
    return {
        "labels": usage["labels"],
        "group_by": usage["group_by"],
        "series": [
            {
                "name": s["name"],
                "spend": [format(v.normalize(), "f") for v in s["spend"]],
                "tokens": s["tokens"],
                "requests": s["requests"],
            }
            for s in usage["series"]
        ],
    }


# --- BYOK -----------------------------------------------------------------------------------------


def provider_key_list(*, organization_id: int) -> QuerySet[ProviderKey]:
    return ProviderKey.objects.filter(organization_id=organization_id).select_related(
        "provider", "created_by"
    )


def provider_key_get(*, organization_id: int, provider_key_id: int) -> ProviderKey | None:
    return provider_key_list(organization_id=organization_id).filter(pk=provider_key_id).first()


def byok_provider_list() -> QuerySet[Provider]:
    """Providers an organisation can bring its own key for (enabled, real upstreams)."""
    return Provider.objects.filter(enabled=True).exclude(api_format="simulated").order_by("name")


# --- Endpoint health (admin) ----------------------------------------------------------------------


def endpoint_health_list() -> list[dict[str, Any]]:
    """Every provider with its endpoints (enabled or not), each with its live health: the last 30
    minutes' uptime, latency, TTFT and throughput, the circuit state, consecutive failures and the
    30-second window the load balancer uses."""
    from routing import health
    from routing.models import Endpoint

    providers = list(Provider.objects.order_by("slug"))
    endpoints = list(
        Endpoint.objects.select_related("model", "provider").order_by("provider__slug", "model__slug")
    )
    stats = health.stats_sync([ep.pk for ep in endpoints])
    rows: dict[int, list[dict[str, Any]]] = {}
    for ep in endpoints:
        rows.setdefault(ep.provider_id, []).append({"endpoint": ep, **stats.get(ep.pk, {})})
    out = []
    for provider in providers:
        eps = rows.get(provider.pk, [])
        requests = sum(r.get("requests", 0) for r in eps)
        failures = sum(r.get("failures", 0) for r in eps)
        out.append(
            {
                "provider": provider,
                "endpoints": eps,
                "requests": requests,
                "uptime": round(100.0 * (requests - failures) / requests, 2) if requests else None,
                "open_circuits": sum(1 for r in eps if r.get("circuit") != "closed"),
            }
        )
    return out


# --- Model pages: each endpoint's live health, minute by minute -----------------------------------


def _minute_point(bucket: dict[str, int]) -> dict[str, float | None]:
    ok, fail = bucket.get("ok", 0), bucket.get("fail", 0)
    gen = bucket.get("gen", 0)
    return {
        "uptime": round(100.0 * ok / (ok + fail), 2) if ok + fail else None,
        "latency_ms": round(bucket.get("lat", 0) / ok) if ok else None,
        "throughput": round(bucket.get("tok", 0) * 1000 / gen, 1) if gen else None,
    }


def endpoint_health_series(*, endpoint_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Per endpoint: the router's live health over its window (health.stats_sync: requests, uptime %,
    mean latency, tokens per second, circuit) and the same numbers minute by minute for the model
    page's charts (None for a minute without requests). Read from the minute buckets the router
    writes: Redis in full mode, this process's book in embedded mode."""
    from routing import health

    now = time.time()
    minute = int(now // 60)
    minutes = list(range(minute - health.WINDOW_MINUTES + 1, minute + 1))
    summary = health.stats_sync(endpoint_ids)
    buckets: dict[int, list[dict[str, int]]] = {}
    if redis_enabled():
        pipe = sync_redis().pipeline(transaction=False)
        for ep in endpoint_ids:
            for m in minutes:
                pipe.hgetall(f"sy:hm:{ep}:{m}")
        results = pipe.execute()
        for i, ep in enumerate(endpoint_ids):
            chunk = results[i * len(minutes) : (i + 1) * len(minutes)]
            buckets[ep] = [{_text(k): int(v) for k, v in (b or {}).items()} for b in chunk]
    else:
        local = health.book.local.buckets
        buckets = {
            ep: [dict(local[(ep, m)]) if (ep, m) in local else {} for m in minutes] for ep in endpoint_ids
        }
    out = {}
    for ep in endpoint_ids:
        points = [_minute_point(b) for b in buckets[ep]]
        out[ep] = {
            **summary.get(ep, {}),
            "minutes": [m * 60 for m in minutes],
            "series": {name: [p[name] for p in points] for name in ("uptime", "latency_ms", "throughput")},
        }
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
