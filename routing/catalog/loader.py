"""Validate catalog YAML files and upsert them atomically (`manage.py load_catalog`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from django.db import transaction

from routing.adapters.caching import PROMPT_CACHING
from routing.catalog.parameters import KNOWN_PARAMETERS
from routing.models import ApiFormat, Endpoint, Model, Provider
from switchyard.money import PER_MILLION, PICO, per_million_to_per_token

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
MODEL_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._:-]*$")
MODALITIES = {"text", "image", "audio", "file", "video", "embeddings"}
PROVIDER_KEYS = {
    "slug",
    "name",
    "api_format",
    "base_url",
    "api_key_env",
    "timeouts",
    "data_policy",
    "enabled",
}
TIMEOUT_KEYS = {"connect", "first_byte", "between_chunks", "total"}
MODEL_KEYS = {
    "slug",
    "name",
    "description",
    "context_length",
    "input_modalities",
    "output_modalities",
    "endpoints",
    "enabled",
}
ENDPOINT_KEYS = {
    "provider",
    "provider_model_id",
    "pricing",
    "context_length",
    "max_completion_tokens",
    "quantization",
    "supported_parameters",
    "prompt_caching",
    "data_policy",
    "enabled",
}
PRICING_KEYS = {"prompt", "completion", "cache_read", "cache_write", "reasoning", "request", "image"}
DATA_POLICY_KEYS = {"training", "retains_prompts", "zdr"}


class CatalogError(Exception):
    """A catalog file is invalid; the message names the file, the entry and the field."""


@dataclass
class Summary:
    providers: int = 0
    models: int = 0
    endpoints: int = 0
    created: int = 0
    updated: int = 0
    disabled: int = 0
    files: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"Loaded {len(self.files)} file(s): {self.providers} providers, {self.models} models, "
            f"{self.endpoints} endpoints ({self.created} created, {self.updated} updated, "
            f"{self.disabled} disabled by --prune)."
        )


class _Ctx:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> CatalogError:
        return CatalogError(f"{self.path}: {where}: {message}")


def _check_keys(ctx: _Ctx, where: str, data: Any, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ctx.fail(where, f"must be a mapping, got {type(data).__name__}")
    unknown = set(data) - allowed
    if unknown:
        raise ctx.fail(where, f"unknown field(s) {', '.join(sorted(unknown))}")
    missing = {k for k in required if data.get(k) in (None, "")}
    if missing:
        raise ctx.fail(where, f"missing required field(s) {', '.join(sorted(missing))}")
    return data


def _positive_int(ctx: _Ctx, where: str, name: str, value: Any, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ctx.fail(where, f"{name} must be a positive integer, got {value!r}")
    return value


def _price(ctx: _Ctx, where: str, name: str, value: Any) -> Decimal:
    if isinstance(value, float):
        raise ctx.fail(
            where, f"pricing.{name} must be a quoted decimal string (floats lose precision), got {value!r}"
        )
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise ctx.fail(where, f"pricing.{name} is not a decimal number: {value!r}")
    if not price.is_finite() or price < 0:
        raise ctx.fail(where, f"pricing.{name} must be a non-negative number, got {value!r}")
    # Stored as USD per token (per request / per image) with 12 places: refuse, never round, anything finer.
    unit = name if name in ("request", "image") else "token"
    per_unit = price if unit != "token" else price / PER_MILLION
    if per_unit != per_unit.quantize(PICO):
        raise ctx.fail(where, f"pricing.{name} {value!r} is finer than a picodollar per {unit}")
    return price


def _data_policy(ctx: _Ctx, where: str, value: Any) -> dict[str, bool]:
    if value is None:
        return {}
    policy = _check_keys(ctx, f"{where}.data_policy", value, DATA_POLICY_KEYS, set())
    for key, flag in policy.items():
        if not isinstance(flag, bool):
            raise ctx.fail(where, f"data_policy.{key} must be true or false")
    return dict(policy)


def _entry(kind: str, idx: int, raw: Any) -> str:
    """Name an entry by its slug when it has one (a 40-model file is not searched by index)."""
    slug = raw.get("slug") if isinstance(raw, dict) else None
    return f"{kind}s[{idx}] ({slug!r})" if slug else f"{kind}s[{idx}]"


def _parse_provider(ctx: _Ctx, idx: int, raw: Any) -> dict[str, Any]:
    where = _entry("provider", idx, raw)
    data = _check_keys(ctx, where, raw, PROVIDER_KEYS, {"slug", "name", "api_format"})
    slug = str(data["slug"])
    where = f"provider {slug!r}"
    if not SLUG_RE.match(slug):
        raise ctx.fail(where, f"slug must match {SLUG_RE.pattern}")
    if data["api_format"] not in ApiFormat.values:
        raise ctx.fail(
            where, f"api_format must be one of {', '.join(ApiFormat.values)}, got {data['api_format']!r}"
        )
    base_url = str(data.get("base_url") or "")
    if data["api_format"] != ApiFormat.SIMULATED and not re.match(r"^https?://", base_url):
        raise ctx.fail(where, "base_url must be an http(s) URL")
    timeouts = data.get("timeouts") or {}
    _check_keys(ctx, f"{where}.timeouts", timeouts, TIMEOUT_KEYS, set())
    parsed_timeouts = {}
    for key, value in timeouts.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ctx.fail(where, f"timeouts.{key} must be a positive number of seconds")
        parsed_timeouts[f"timeout_{key}"] = float(value)
    env = data.get("api_key_env") or ""
    if env and not re.match(r"^[A-Z_][A-Z0-9_]*$", env):
        raise ctx.fail(where, "api_key_env must be an environment variable name")
    return {
        "slug": slug,
        "name": str(data["name"]),
        "api_format": data["api_format"],
        "base_url": base_url.rstrip("/"),
        "api_key_env": env,
        # Only an explicit `enabled` in the file overrides an admin's enable/disable.
        **({"enabled": bool(data["enabled"])} if "enabled" in data else {}),
        "data_policy": _data_policy(ctx, where, data.get("data_policy")),
        **parsed_timeouts,
    }


def _parse_endpoint(ctx: _Ctx, model_slug: str, idx: int, raw: Any, providers: set[str]) -> dict[str, Any]:
    where = f"model {model_slug!r} endpoints[{idx}]"
    data = _check_keys(ctx, where, raw, ENDPOINT_KEYS, {"provider", "provider_model_id", "pricing"})
    provider = str(data["provider"])
    if provider not in providers:
        raise ctx.fail(where, f"provider {provider!r} is not declared in the loaded files or the database")
    where = f"model {model_slug!r} endpoint {provider!r}"
    pricing = _check_keys(ctx, f"{where} pricing", data["pricing"], PRICING_KEYS, {"prompt", "completion"})
    prices = {name: _price(ctx, where, name, value) for name, value in pricing.items()}
    params = data.get("supported_parameters") or []
    if not isinstance(params, list) or any(p not in KNOWN_PARAMETERS for p in params):
        bad = [p for p in params if p not in KNOWN_PARAMETERS] if isinstance(params, list) else params
        raise ctx.fail(where, f"supported_parameters has unknown names: {bad}")
    quant = data.get("quantization")
    caching = data.get("prompt_caching")
    if caching is not None and caching not in PROMPT_CACHING:
        raise ctx.fail(where, f"prompt_caching must be one of {', '.join(PROMPT_CACHING)}, got {caching!r}")
    return {
        "provider": provider,
        "provider_model_id": str(data["provider_model_id"]),
        "price_prompt": per_million_to_per_token(prices["prompt"]),
        "price_completion": per_million_to_per_token(prices["completion"]),
        "price_cache_read": per_million_to_per_token(prices.get("cache_read", Decimal(0))),
        "price_cache_write": per_million_to_per_token(prices.get("cache_write", Decimal(0))),
        "price_reasoning": per_million_to_per_token(prices["reasoning"]) if "reasoning" in prices else None,
        # Per-request and per-image prices are plain USD, not per million.
        "price_request": prices.get("request", Decimal(0)),
        "price_image": prices.get("image", Decimal(0)),
        # 0 = inherit the model's context length (the column is NOT NULL).
        "context_length": _positive_int(
            ctx, where, "context_length", data.get("context_length"), allow_none=True
        )
        or 0,
        "max_completion_tokens": _positive_int(
            ctx, where, "max_completion_tokens", data.get("max_completion_tokens"), allow_none=True
        ),
        "quantization": str(quant) if quant else "",
        "supported_parameters": list(params),
        # Empty: derived from the format and the cache prices (routing/adapters/caching.py).
        "prompt_caching": caching or "",
        "data_policy": _data_policy(ctx, where, data.get("data_policy")),
        # Only an explicit `enabled` in the file overrides an admin's enable/disable.
        **({"enabled": bool(data["enabled"])} if "enabled" in data else {}),
    }


def _parse_model(ctx: _Ctx, idx: int, raw: Any, providers: set[str]) -> dict[str, Any]:
    data = _check_keys(ctx, _entry("model", idx, raw), raw, MODEL_KEYS, {"slug", "name"})
    slug = str(data["slug"])
    where = f"model {slug!r}"
    if not MODEL_SLUG_RE.match(slug):
        raise ctx.fail(where, 'slug must be lowercase "author/name"')
    for field_name in ("input_modalities", "output_modalities"):
        value = data.get(field_name, ["text"])
        if not isinstance(value, list) or not value or any(m not in MODALITIES for m in value):
            raise ctx.fail(where, f"{field_name} must be a non-empty list of {sorted(MODALITIES)}")
    endpoints = data.get("endpoints") or []
    if not isinstance(endpoints, list):
        raise ctx.fail(where, "endpoints must be a list")
    parsed = [_parse_endpoint(ctx, slug, i, e, providers) for i, e in enumerate(endpoints)]
    seen: set[str] = set()
    for ep in parsed:
        if ep["provider"] in seen:
            raise ctx.fail(where, f"provider {ep['provider']!r} appears twice in endpoints")
        seen.add(ep["provider"])
    return {
        "slug": slug,
        "name": str(data["name"]),
        "description": str(data.get("description") or ""),
        "context_length": _positive_int(ctx, where, "context_length", data.get("context_length", 0) or 1),
        "input_modalities": data.get("input_modalities", ["text"]),
        "output_modalities": data.get("output_modalities", ["text"]),
        # Only an explicit `enabled` in the file overrides an admin's enable/disable.
        **({"enabled": bool(data["enabled"])} if "enabled" in data else {}),
        "endpoints": parsed,
    }


def parse_files(paths: list[str | Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read and validate every file before anything is written; raise CatalogError on the first problem."""
    raw_docs = []
    providers: dict[str, dict[str, Any]] = {}
    for path in paths:
        ctx = _Ctx(str(path))
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise CatalogError(f"{path}: cannot read: {exc.strerror}")
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise CatalogError(f"{path}: not valid YAML: {exc}")
        _check_keys(ctx, "top level", doc, {"providers", "models"}, set())
        for idx, raw in enumerate(doc.get("providers") or []):
            provider = _parse_provider(ctx, idx, raw)
            if provider["slug"] in providers:
                raise ctx.fail(f"provider {provider['slug']!r}", "slug declared twice")
            providers[provider["slug"]] = provider
        raw_docs.append((ctx, doc))
    known = set(providers) | set(Provider.objects.values_list("slug", flat=True))
    models: dict[str, dict[str, Any]] = {}
    for ctx, doc in raw_docs:
        for idx, raw in enumerate(doc.get("models") or []):
            model = _parse_model(ctx, idx, raw, known)
            if model["slug"] in models:
                raise ctx.fail(f"model {model['slug']!r}", "slug declared twice")
            models[model["slug"]] = model
    return list(providers.values()), list(models.values())


def catalog_load(paths: list[str | Path], *, prune: bool = False) -> Summary:
    from routing.services import catalog_bumps_deferred, catalog_version_bump

    with transaction.atomic():
        with catalog_bumps_deferred():
            summary = _catalog_write(paths, prune=prune)
        catalog_version_bump()
    return summary


def _catalog_write(paths: list[str | Path], *, prune: bool) -> Summary:
    providers, models = parse_files(paths)
    summary = Summary(files=[str(p) for p in paths])
    by_slug: dict[str, Provider] = {}
    for data in providers:
        obj, created = Provider.objects.update_or_create(slug=data["slug"], defaults=data)
        by_slug[obj.slug] = obj
        summary.providers += 1
        summary.created += created
        summary.updated += not created
    kept: set[int] = set()
    for data in models:
        endpoints = data.pop("endpoints")
        model, created = Model.objects.update_or_create(slug=data["slug"], defaults=data)
        summary.models += 1
        summary.created += created
        summary.updated += not created
        for ep in endpoints:
            provider = by_slug.get(ep["provider"]) or Provider.objects.get(slug=ep["provider"])
            fields = {k: v for k, v in ep.items() if k != "provider"}
            endpoint, created = Endpoint.objects.update_or_create(
                model=model, provider=provider, defaults=fields
            )
            if endpoint.pruned and "enabled" not in fields:
                # Back in the files after a --prune: it returns (an admin's own disable would stay).
                endpoint.enabled, endpoint.pruned = True, False
                endpoint.save(update_fields=["enabled", "pruned"])
            kept.add(endpoint.pk)
            summary.endpoints += 1
            summary.created += created
            summary.updated += not created
    if prune:
        summary.disabled = (
            Endpoint.objects.filter(enabled=True).exclude(pk__in=kept).update(enabled=False, pruned=True)
        )
    return summary
