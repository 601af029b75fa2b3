"""The usage records billing writes and audits, registered by the app that owns them.

One row per request (routing.models.Generation, primary key the generation id) is written by the
usage writers beside its ledger entry and checked by the auditor; an event may name an endpoint
(routing.models.Endpoint) deleted while it was in flight. Both models belong to routing, a layer
above billing, so routing registers them here at start-up (RoutingConfig.ready) instead of billing
importing them; their table, admin pages and migrations stay routing's.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.db import models


@dataclass(frozen=True, slots=True)
class UsageRecords:
    generation: type[models.Model]  # one row per request, keyed by generation id
    endpoint: type[models.Model]  # what an event's `endpoint` refers to

    # Django's documented handle for generic code on a model it does not name (here, `objects`).
    def generations(self) -> models.Manager[models.Model]:
        return self.generation._default_manager

    def endpoints(self) -> models.Manager[models.Model]:
        return self.endpoint._default_manager


_records: UsageRecords | None = None


def usage_records_register(*, generation: type[models.Model], endpoint: type[models.Model]) -> None:
    """Billing writes and audits usage records as `generation` rows from now on (once, at start-up)."""
    global _records
    _records = UsageRecords(generation=generation, endpoint=endpoint)


def usage_records() -> UsageRecords:
    if _records is None:
        raise ImproperlyConfigured(
            "no usage record model is registered: the routing app (which registers it in its "
            "AppConfig.ready) must be in INSTALLED_APPS"
        )
    return _records
