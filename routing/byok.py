"""BYOK on the hot path: an organisation's own provider keys (cached, decrypted) and the fee they pay.

A request whose candidate endpoint belongs to a provider the organisation has a key for is first
tried with that key (BYOK endpoints go first, as OpenRouter does), charged only the platform fee
(`SWITCHYARD_BYOK_FEE_PERCENT` of the list cost). When the key fails and the key allows it, the same
endpoint is tried again later in the list with the platform's key, at list price.

Reads never touch the ORM per request: each process keeps the decrypted keys of an organisation for
`SWITCHYARD_BYOK_CACHE_SECONDS`. Behind that, in full mode, Redis holds the organisation's encrypted
rows tagged with a per-organisation version that services bump after every committed change (a reader
that rebuilt from a database read older than the bump tags it with the older version, so the next
reader rebuilds again: a stale copy never survives a change). Embedded mode reads the database on a
cache miss (at most once per organisation per TTL).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction

from routing.adapters.base import UpstreamFailure
from routing.catalog.snapshot import EndpointInfo
from routing.models import ProviderKey
from routing.router import Candidate
from switchyard.crypto import DecryptionError, decrypt
from switchyard.db import db_call
from switchyard.errors import NoProviderAvailable
from switchyard.shared import TTLCache, async_redis, redis_enabled, sync_redis

logger = logging.getLogger("switchyard.byok")

REDIS_ENTRY_TTL = 3600
# Attempt failures caused by the organisation's own key (its credentials, its quota, its access to the
# model, characters a header cannot carry): they are not the provider's fault, so they never count
# against the endpoint's health for everyone else (one tenant could otherwise open a shared circuit).
BYOK_FAULTS = frozenset({"byok_auth", "byok_rate_limited", "byok_not_found", "byok_bad_key"})


@dataclass(frozen=True, slots=True)
class OrgProviderKey:
    """One organisation's key for one provider, decrypted. `api_key` is empty when it cannot be decrypted."""

    id: int
    provider_slug: str
    allow_platform_fallback: bool
    api_key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ByokEndpoint(EndpointInfo):
    """A catalog endpoint reached with the organisation's own key: same id, prices and limits (so health,
    routing and the list cost are the endpoint's), but a different credential and a fee instead of the
    list price (routing/gateway/cost.py applies it)."""

    provider_key_id: int
    api_key: str = field(repr=False)

    def missing_key_env(self) -> str:
        return ""  # reached with the organisation's key, not the platform's


_ENDPOINT_FIELDS = tuple(f.name for f in dataclasses.fields(EndpointInfo))


def is_byok(ep: EndpointInfo | None) -> bool:
    return isinstance(ep, ByokEndpoint)


def byok_api_key(ep: EndpointInfo) -> str | None:
    """The organisation's key when the endpoint is reached through BYOK, else None (the platform key)."""
    return ep.api_key if isinstance(ep, ByokEndpoint) else None


def byok_fee_units(list_units: int, percent: Decimal | None = None) -> int:
    """The platform fee for a BYOK request: `percent` (default SWITCHYARD_BYOK_FEE_PERCENT) of the list
    cost in picodollars, computed exactly in integers and rounded UP to a whole picodollar (so it is
    never below the exact fee and at most one picodollar above it)."""
    pct = settings.SWITCHYARD_BYOK_FEE_PERCENT if percent is None else percent
    num, den = Decimal(pct).as_integer_ratio()
    return -((-list_units * num) // (den * 100))


def charged_units(ep: EndpointInfo, list_units: int) -> int:
    """What the organisation pays for `list_units` of list cost at this endpoint."""
    return byok_fee_units(list_units) if isinstance(ep, ByokEndpoint) else list_units


def byok_endpoint(ep: EndpointInfo, key: OrgProviderKey) -> ByokEndpoint:
    values = {name: getattr(ep, name) for name in _ENDPOINT_FIELDS}
    return ByokEndpoint(**values, provider_key_id=key.id, api_key=key.api_key)


def byok_failure(ep: EndpointInfo, failure: UpstreamFailure) -> None:
    """Rewrite, in place, a failure of an attempt made with the organisation's key: the message names
    the organisation's key (not the platform's), and failures the key causes get BYOK_FAULTS kinds."""
    if not isinstance(ep, ByokEndpoint):
        return
    if failure.kind == "auth":
        failure.kind = "byok_auth"
        failure.message = (
            f"{ep.provider_name} rejected your organisation's own API key (BYOK); "
            "replace it under Settings → Provider keys."
        )
    elif failure.kind == "rate_limited":
        failure.kind = "byok_rate_limited"
        failure.message = (
            f"{ep.provider_name} rate-limited your organisation's own API key (BYOK): {failure.message}"
        )
    elif failure.kind == "not_found":
        # With the platform's key the endpoint answers; through the organisation's key a 404 is that
        # account's access to the model.
        failure.kind = "byok_not_found"
        failure.message = (
            f"{ep.provider_name} does not serve this model to your organisation's own API key (BYOK): "
            f"{failure.message}"
        )
    elif failure.kind == "bad_header":
        failure.kind = "byok_bad_key"
        failure.message = (
            f"Your organisation's own API key (BYOK) for {ep.provider_name} has characters an HTTP header "
            "cannot carry, so it was not sent; replace it under Settings → Provider keys."
        )


def byok_plan(candidates: list[Candidate], keys: dict[str, OrgProviderKey]) -> list[Candidate]:
    """Candidates with the organisation's keys applied: BYOK endpoints first (in the router's order),
    then the rest in the router's order, where a BYOK provider's platform endpoint stays only if its key
    allows platform fallback."""
    if not keys:
        return candidates
    first: list[Candidate] = []
    rest: list[Candidate] = []
    for cand in candidates:
        key = keys.get(cand.endpoint.provider_slug)
        if key is None:
            rest.append(cand)
            continue
        if key.api_key:
            first.append(Candidate(model=cand.model, endpoint=byok_endpoint(cand.endpoint, key)))
        if key.allow_platform_fallback and not cand.endpoint.missing_key_env():
            rest.append(cand)
    planned = first + rest
    if not planned:
        providers = sorted({c.endpoint.provider_slug for c in candidates})
        raise NoProviderAvailable(
            "Your organisation's own key for "
            + ", ".join(providers)
            + " cannot be used (it could not be decrypted) and platform fallback is off for it.",
            metadata={"providers": providers},
        )
    return planned


async def byok_candidates(org_id: int, candidates: list[Candidate]) -> list[Candidate]:
    return byok_plan(candidates, await org_provider_keys(org_id))


async def byok_providers(org_id: int) -> frozenset[str]:
    """Slugs of the providers the organisation has a usable key for: the router keeps their endpoints
    even when the platform key is not set (byok_candidates then applies the key)."""
    return frozenset(slug for slug, key in (await org_provider_keys(org_id)).items() if key.api_key)


# --- the per-process cache --------------------------------------------------------------------------

_local: TTLCache[dict[str, OrgProviderKey]] = TTLCache(ttl=float(settings.SWITCHYARD_BYOK_CACHE_SECONDS))


def _entry_name(org_id: int) -> str:
    return f"sy:byok:{org_id}"


def _version_name(org_id: int) -> str:
    return f"sy:byok:ver:{org_id}"


def _rows(org_id: int) -> list[list[Any]]:

    query = (
        ProviderKey.objects.filter(organization_id=org_id)
        .order_by("pk")
        .values_list("id", "provider__slug", "encrypted_key", "allow_platform_fallback")
    )
    return [list(r) for r in query]


def _decode(rows: list[list[Any]]) -> dict[str, OrgProviderKey]:
    keys = {}
    for key_id, provider, token, fallback in rows:
        try:
            secret = decrypt(token)
        except DecryptionError:
            logger.error(
                "provider key %s (%s) cannot be decrypted with SWITCHYARD_ENCRYPTION_KEYS; not using it",
                key_id,
                provider,
            )
            secret = ""
        keys[provider] = OrgProviderKey(
            id=key_id, provider_slug=provider, allow_platform_fallback=bool(fallback), api_key=secret
        )
    return keys


async def org_provider_keys(org_id: int) -> dict[str, OrgProviderKey]:
    """The organisation's keys by provider slug: this process's copy (a couple of seconds old at most),
    else Redis (full mode, when its version is current), else the database."""
    name = str(org_id)
    cached = _local.get(name)
    if cached is not None:
        return cached
    rows: list[list[Any]] | None = None
    if redis_enabled():
        client = async_redis()
        raw_version, raw_entry = await client.mget(_version_name(org_id), _entry_name(org_id))
        version = int(raw_version or 0)
        if raw_entry is not None:
            entry = json.loads(raw_entry)
            if entry.get("v") == version:
                rows = entry["rows"]
        if rows is None:
            # Read the version before the database: a change committed after this read bumps it past
            # `version`, so this entry is rebuilt by the next reader rather than trusted.
            rows = await db_call(_rows, org_id)
            await client.set(
                _entry_name(org_id), json.dumps({"v": version, "rows": rows}), ex=REDIS_ENTRY_TTL
            )
    else:
        rows = await db_call(_rows, org_id)
    keys = _decode(rows)
    _local.set(name, keys)
    return keys


def org_provider_keys_changed(org_id: int) -> None:
    """Call inside the transaction that changed an organisation's keys: once it commits, this process
    forgets its copy and (full mode) every other process's next cache miss rebuilds from the database."""

    def bump() -> None:
        _forget_here(org_id)
        if redis_enabled():
            sync_redis().incr(_version_name(org_id))

    transaction.on_commit(bump)


def _forget_here(org_id: int) -> None:
    """This process sees its own change at once; others within their cache TTL."""
    _local.pop(str(org_id))


def forget_local() -> None:
    """Drop this process's cached keys (tests)."""
    _local.clear()
