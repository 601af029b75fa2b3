"""Reads of the catalog (OpenRouter's shapes) and of generation records, scoped by organisation."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from billing.money import UNITS_PER_USD, from_units, json_number, price_str
from routing.catalog.snapshot import EndpointInfo, ModelInfo, Snapshot
from routing.models import Generation


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


def model_list(*, snapshot: Snapshot, search: str | None = None) -> list[dict[str, Any]]:
    out = []
    for m in snapshot.models.values():
        if not m.endpoints:
            continue
        if search and search.lower() not in (m.slug + " " + m.name).lower():
            continue
        top = cheapest_endpoint(m)
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
                "data_policy": ep.data_policy,
                "status": 0,
                "uptime_last_30m": stats.get("uptime"),
                "latency_last_30m": stats.get("latency_ms"),
                "throughput_last_30m": stats.get("throughput"),
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
    return Generation.objects.filter(organization_id=organization_id, pk=generation_id).first()


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
    }
