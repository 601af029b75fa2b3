"""API key format, hashing and the cached key lookup shared by DRF and the hot path."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from switchyard.db import db_call
from switchyard.shared import TTLCache, async_redis, redis_enabled, sync_redis

KEY_PREFIX = "sk-sy-v1-"
# 32 random bytes = 256 bits -> 43 URL-safe characters.
KEY_RANDOM_BYTES = 32
REDIS_KEY_TTL = 300


def key_generate() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_looks_valid(secret: str) -> bool:
    return secret.startswith(KEY_PREFIX) and len(secret) >= len(KEY_PREFIX) + 43 and len(secret) <= 128


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What the hot path needs to know about a key, cacheable as JSON."""

    id: int
    org_id: int
    org_slug: str
    name: str
    usable: bool
    expires_at: float | None  # unix seconds
    limit_units: int | None
    limit_reset: str
    routing_defaults: dict
    # Rate-limit overrides (None: the deployment default); defaults keep older cached JSON readable.
    rate_limit_rpm: int | None = None
    rate_limit_tpm: int | None = None
    org_rate_limit_rpm: int | None = None
    org_rate_limit_tpm: int | None = None
    # The person the free tier counts this key against across all their organisations: who made the
    # key, else the organisation's first owner (keys made by a command). None: nobody (no owner).
    user_id: int | None = None

    def active(self) -> bool:
        return self.usable and (self.expires_at is None or self.expires_at > time.time())


_local: TTLCache[KeyInfo | bool] = TTLCache(ttl=float(settings.SWITCHYARD_KEY_CACHE_SECONDS))


def _redis_name(digest: str) -> str:
    return f"sy:key:{digest}"


def _owner_query(org_id: int) -> Any:
    from accounts.models import Membership, Role

    return (
        Membership.objects.filter(organization_id=org_id, role=Role.OWNER)
        .order_by("created_at", "pk")
        .values_list("user_id", flat=True)
    )


def _info_from_row(row: object, user_id: int | None) -> KeyInfo:
    expires: datetime | None = row.expires_at  # type: ignore[attr-defined]
    return KeyInfo(
        id=row.id,  # type: ignore[attr-defined]
        org_id=row.organization_id,  # type: ignore[attr-defined]
        org_slug=row.organization.slug,  # type: ignore[attr-defined]
        name=row.name,  # type: ignore[attr-defined]
        usable=not row.disabled and row.deleted_at is None,  # type: ignore[attr-defined]
        expires_at=expires.timestamp() if expires else None,
        limit_units=row.limit_units,  # type: ignore[attr-defined]
        limit_reset=row.limit_reset,  # type: ignore[attr-defined]
        routing_defaults=row.organization.routing_defaults or {},  # type: ignore[attr-defined]
        rate_limit_rpm=row.rate_limit_rpm,  # type: ignore[attr-defined]
        rate_limit_tpm=row.rate_limit_tpm,  # type: ignore[attr-defined]
        org_rate_limit_rpm=row.organization.rate_limit_rpm,  # type: ignore[attr-defined]
        org_rate_limit_tpm=row.organization.rate_limit_tpm,  # type: ignore[attr-defined]
        user_id=user_id,
    )


def key_lookup_sync(secret: str) -> KeyInfo | None:
    """Uncached lookup for DRF views (not the hot path)."""
    if not key_looks_valid(secret):
        return None
    return _info_by_digest(key_hash(secret))


def _info_by_digest(digest: str) -> KeyInfo | None:
    from accounts.models import ApiKey

    row = ApiKey.objects.select_related("organization").filter(key_hash=digest).first()
    if row is None:
        return None
    return _info_from_row(row, row.created_by_id or _owner_query(row.organization_id).first())


async def key_lookup(secret: str) -> KeyInfo | None:
    """Hot-path lookup: in-process cache (a couple of seconds), then Redis (full mode), then the database.

    Services that change a key delete its Redis entry, so a revoked key stops working in every
    process within the in-process TTL.
    """
    if not key_looks_valid(secret):
        return None
    digest = key_hash(secret)
    cached = _local.get(digest)
    if cached is not None:
        return cached if isinstance(cached, KeyInfo) else None
    info: KeyInfo | None = None
    found = False
    if redis_enabled():
        raw = await async_redis().get(_redis_name(digest))
        if raw is not None:
            found = True
            info = KeyInfo(**json.loads(raw)) if raw != b"-" else None
    if not found:
        info = await db_call(_info_by_digest, digest)
        if redis_enabled():
            await async_redis().set(
                _redis_name(digest), json.dumps(asdict(info)) if info else "-", ex=REDIS_KEY_TTL
            )
    _local.set(digest, info or False)
    return info


def key_cache_invalidate(digest: str) -> None:
    _local.pop(digest)
    if redis_enabled():
        sync_redis().delete(_redis_name(digest))


def now_ts() -> float:
    return timezone.now().timestamp()
