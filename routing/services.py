"""Writes to the catalog and its version counter."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from django.db import transaction
from django.db.models import F

from routing.models import CatalogState, Endpoint, Provider
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
