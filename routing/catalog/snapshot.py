"""An immutable in-memory copy of the enabled catalog, rebuilt when the catalog version moves."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings

from routing.adapters.caching import default_prompt_caching
from routing.models import CatalogState, Endpoint, Model
from switchyard.db import db_call
from switchyard.money import UNITS_PER_USD
from switchyard.shared import async_redis, redis_enabled, start_shared

logger = logging.getLogger("switchyard.catalog")


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    id: int
    model_slug: str
    provider_slug: str
    provider_name: str
    api_format: str
    base_url: str
    api_key_env: str
    provider_model_id: str
    timeout_connect: float
    timeout_first_byte: float
    timeout_between_chunks: float
    timeout_total: float
    # Prices in picodollars per token (per request / per image for those two): exact integer arithmetic.
    prompt_units: int
    completion_units: int
    cache_read_units: int
    cache_write_units: int
    reasoning_units: int
    request_units: int
    image_units: int
    context_length: int
    max_completion_tokens: int | None
    quantization: str
    supported_parameters: frozenset[str]
    data_policy: dict
    prompt_caching: str  # explicit | implicit | none (routing/adapters/caching.py)

    @property
    def is_free(self) -> bool:
        return not (self.prompt_units or self.completion_units or self.request_units)

    @property
    def explicit_caching(self) -> bool:
        """Whether `cache_control` is sent to this endpoint (it is removed otherwise)."""
        return self.prompt_caching == "explicit"

    def missing_key_env(self) -> str:
        """The platform key's variable when the provider needs one (`api_key_env`) and this process's
        environment does not set it, else "". Read live, not at snapshot time: it is a dict lookup, and
        a key set later (or by a test) counts at once."""
        if self.api_key_env and not os.environ.get(self.api_key_env):
            return self.api_key_env
        return ""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    slug: str
    name: str
    description: str
    context_length: int
    input_modalities: tuple[str, ...]
    output_modalities: tuple[str, ...]
    created: int
    endpoints: tuple[EndpointInfo, ...]


@dataclass(frozen=True)
class Snapshot:
    version: int
    models: dict[str, ModelInfo] = field(default_factory=dict)


def _units(price: Decimal | None) -> int:
    return int((price or Decimal(0)) * UNITS_PER_USD)


def _stored_version() -> int:
    state = CatalogState.objects.filter(pk=1).first()
    return state.version if state else 0


def build_snapshot() -> Snapshot:
    state = CatalogState.objects.filter(pk=1).first()
    version = state.version if state else 0
    endpoints: dict[int, list[EndpointInfo]] = {}
    rows = (
        Endpoint.objects.filter(enabled=True, provider__enabled=True, model__enabled=True)
        .select_related("provider", "model")
        .order_by("model_id", "provider__slug")
    )
    for ep in rows:
        prov = ep.provider
        policy = {**(prov.data_policy or {}), **(ep.data_policy or {})}
        endpoints.setdefault(ep.model_id, []).append(
            EndpointInfo(
                id=ep.pk,
                model_slug=ep.model.slug,
                provider_slug=prov.slug,
                provider_name=prov.name,
                api_format=prov.api_format,
                base_url=prov.base_url,
                api_key_env=prov.api_key_env,
                provider_model_id=ep.provider_model_id,
                timeout_connect=prov.timeout_connect,
                timeout_first_byte=prov.timeout_first_byte,
                timeout_between_chunks=prov.timeout_between_chunks,
                timeout_total=prov.timeout_total,
                prompt_units=_units(ep.price_prompt),
                completion_units=_units(ep.price_completion),
                cache_read_units=_units(ep.price_cache_read),
                cache_write_units=_units(ep.price_cache_write),
                reasoning_units=_units(
                    ep.price_reasoning if ep.price_reasoning is not None else ep.price_completion
                ),
                request_units=_units(ep.price_request),
                image_units=_units(ep.price_image),
                context_length=ep.context_length or ep.model.context_length,
                max_completion_tokens=ep.max_completion_tokens,
                quantization=ep.quantization,
                supported_parameters=frozenset(ep.supported_parameters or []),
                data_policy=policy,
                prompt_caching=ep.prompt_caching
                or default_prompt_caching(
                    api_format=prov.api_format,
                    cache_read=bool(ep.price_cache_read),
                    cache_write=bool(ep.price_cache_write),
                ),
            )
        )
    models = {}
    for m in Model.objects.filter(enabled=True).order_by("slug"):
        models[m.slug] = ModelInfo(
            slug=m.slug,
            name=m.name,
            description=m.description,
            context_length=m.context_length,
            input_modalities=tuple(m.input_modalities),
            output_modalities=tuple(m.output_modalities),
            created=int(m.created_at.timestamp()),
            endpoints=tuple(endpoints.get(m.pk, ())),
        )
    return Snapshot(version=version, models=models)


class CatalogCache:
    """Holds the current snapshot; a background task polls the version once a second and reloads."""

    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None
        self._checked_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def get_sync(self) -> Snapshot:
        """For sync callers (DRF views): reload when the stored version moved, checked at most once a second."""
        now = time.monotonic()
        if self._snapshot is None or now - self._checked_at >= settings.SWITCHYARD_CATALOG_CHECK_SECONDS:
            self._checked_at = now
            state = CatalogState.objects.filter(pk=1).first()
            version = state.version if state else 0
            if self._snapshot is None or version != self._snapshot.version:
                self._snapshot = build_snapshot()
        return self._snapshot

    async def get(self) -> Snapshot:
        if self._snapshot is None:
            self._snapshot = await db_call(build_snapshot)
            self._checked_at = time.monotonic()
        if self._task is None or self._task.done():
            self._task = start_shared(self._poll())
        return self._snapshot

    async def _current_version(self) -> int:
        if redis_enabled():
            raw = await async_redis().get("sy:catalog:version")
            return int(raw or 0)
        return await db_call(_stored_version)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(settings.SWITCHYARD_CATALOG_CHECK_SECONDS)
            try:
                epoch = self._epoch
                version = await self._current_version()
                if self._snapshot is None or version != self._seen_version:
                    snapshot = await db_call(build_snapshot)
                    if epoch == self._epoch:  # not cleared meanwhile
                        self._snapshot = snapshot
                        self._seen_version = version
            except Exception:
                logger.exception("catalog refresh failed; keeping the previous snapshot")

    _seen_version = -1
    _epoch = 0

    def clear(self) -> None:
        """Forget the snapshot (tests; an admin 'reload now')."""
        self._epoch += 1
        self._seen_version = -1
        self._snapshot = None


catalog = CatalogCache()
