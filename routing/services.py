"""Writes to the catalog and its version counter."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from django.db import transaction
from django.db.models import F

from accounts.audit import audit_record
from routing.byok import org_provider_keys_changed
from routing.models import CatalogState, Endpoint, Provider, ProviderKey
from switchyard.crypto import DecryptionError, encrypt, reencrypt
from switchyard.errors import BadRequest
from switchyard.shared import redis_enabled, sync_redis

CATALOG_VERSION_KEY = "sy:catalog:version"
_quiet = threading.local()


@contextlib.contextmanager
def catalog_bumps_deferred() -> Iterator[None]:
    """Inside a bulk write, skip the per-row bumps; the caller bumps once at the end."""
    _quiet.on = True
    try:
        yield
    finally:
        _quiet.on = False


def catalog_version_bump() -> None:
    if getattr(_quiet, "on", False):
        return

    def bump() -> None:
        updated = CatalogState.objects.filter(pk=1).update(version=F("version") + 1)
        if not updated:
            CatalogState.objects.get_or_create(pk=1, defaults={"version": 1})
        if redis_enabled():
            sync_redis().incr(CATALOG_VERSION_KEY)

    transaction.on_commit(bump)


def endpoint_set_enabled(*, endpoint: Endpoint, enabled: bool) -> Endpoint:
    endpoint.enabled = enabled
    endpoint.save(update_fields=["enabled", "updated_at"])
    return endpoint


def provider_set_enabled(*, provider: Provider, enabled: bool) -> Provider:
    provider.enabled = enabled
    provider.save(update_fields=["enabled", "updated_at"])
    return provider


# --- BYOK: organisations' own provider keys ------------------------------------------------------------

PROVIDER_KEY_MIN_LENGTH = 8
PROVIDER_KEY_MAX_LENGTH = 1000
PROVIDER_KEY_FIRST_CHAR, PROVIDER_KEY_LAST_CHAR = "!", "~"  # printable ASCII, no space


def provider_key_clean(api_key: str) -> str:
    """The key as it will be stored (surrounding whitespace removed), or BadRequest naming the field."""

    secret = (api_key or "").strip()
    if not PROVIDER_KEY_MIN_LENGTH <= len(secret) <= PROVIDER_KEY_MAX_LENGTH:
        raise BadRequest(
            f"A provider key is {PROVIDER_KEY_MIN_LENGTH} to {PROVIDER_KEY_MAX_LENGTH} characters long.",
            metadata={"field": "api_key"},
        )
    if any(ch.isspace() for ch in secret) or not secret.isprintable():
        raise BadRequest(
            "A provider key cannot contain spaces or control characters.", metadata={"field": "api_key"}
        )
    if not all(PROVIDER_KEY_FIRST_CHAR <= ch <= PROVIDER_KEY_LAST_CHAR for ch in secret):
        # It is sent in an HTTP header: anything else fails on every request (a look-alike character
        # pasted from a document), and no provider issues such keys.
        raise BadRequest(
            "A provider key is printable ASCII only (letters, digits and punctuation); this one has "
            "other characters, often a look-alike pasted from a document. Copy it again from the provider.",
            metadata={"field": "api_key"},
        )
    return secret


@transaction.atomic
def provider_key_save(
    *,
    organization: Any,
    provider: Provider,
    api_key: str,
    allow_platform_fallback: bool = True,
    user: Any = None,
) -> ProviderKey:
    """Add or replace an organisation's key for a provider. Only the ciphertext and the last four
    characters are stored; running servers use the new key within SWITCHYARD_BYOK_CACHE_SECONDS."""

    if not provider.enabled or provider.api_format == "simulated":
        raise BadRequest(
            f"Provider {provider.slug} does not take organisation keys.", metadata={"field": "provider"}
        )
    secret = provider_key_clean(api_key)
    row, _ = ProviderKey.objects.select_for_update().update_or_create(
        organization=organization,
        provider=provider,
        defaults={
            "encrypted_key": encrypt(secret),
            "last4": secret[-4:],
            "allow_platform_fallback": allow_platform_fallback,
            "created_by": user,
        },
    )

    audit_record(
        action="provider_key.saved",
        organization=organization,
        actor=user,
        target=row,
        target_label=f"{provider.slug} …{secret[-4:]}",
        metadata={"provider": provider.slug, "allow_platform_fallback": allow_platform_fallback},
    )
    org_provider_keys_changed(organization.pk)
    return row


@transaction.atomic
def provider_key_set_fallback(*, provider_key: ProviderKey, allow_platform_fallback: bool) -> ProviderKey:

    provider_key.allow_platform_fallback = allow_platform_fallback
    provider_key.save(update_fields=["allow_platform_fallback", "updated_at"])
    audit_record(
        action="provider_key.updated",
        organization=provider_key.organization_id,
        target=provider_key,
        metadata={"allow_platform_fallback": allow_platform_fallback},
    )
    org_provider_keys_changed(provider_key.organization_id)
    return provider_key


@transaction.atomic
def provider_key_delete(*, provider_key: ProviderKey) -> None:

    org_id = provider_key.organization_id
    audit_record(action="provider_key.deleted", organization=org_id, target=provider_key)
    provider_key.delete()
    org_provider_keys_changed(org_id)


def provider_keys_reencrypt() -> tuple[int, list[int]]:
    """Re-encrypt every stored provider key with the first SWITCHYARD_ENCRYPTION_KEYS key.

    Returns (re-encrypted count, ids that no configured key can decrypt). Each row is rewritten only if
    its ciphertext is unchanged since it was read, so a concurrent save is never overwritten."""

    done, failed = 0, []
    for key_id, org_id, token in ProviderKey.objects.order_by("pk").values_list(
        "pk", "organization_id", "encrypted_key"
    ):
        try:
            fresh = reencrypt(token)
        except DecryptionError:
            failed.append(key_id)
            continue
        with transaction.atomic():
            if ProviderKey.objects.filter(pk=key_id, encrypted_key=token).update(encrypted_key=fresh):
                done += 1
                org_provider_keys_changed(org_id)
    return done, failed
