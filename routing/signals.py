"""Bump the catalog version whenever a provider, model or endpoint changes, so web processes reload."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from routing.models import Endpoint, Model, Provider


@receiver([post_save, post_delete], sender=Provider)
@receiver([post_save, post_delete], sender=Model)
@receiver([post_save, post_delete], sender=Endpoint)
def _catalog_changed(sender: Any, **kwargs: Any) -> None:
    from routing.services import catalog_version_bump

    catalog_version_bump()
