"""Billing's shared state for /metrics (switchyard/metrics.py reads it at each scrape): open holds, the
usage queue's depth and the parked usage events. Registered in BillingConfig.ready."""

from __future__ import annotations

import logging

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from billing import usage
from billing.holds import HOLDS_ZSET, USAGE_STREAM
from billing.models import Hold, HoldStatus
from billing.parking import parked_usage_totals
from switchyard.metrics import state_source
from switchyard.money import UNITS_PER_USD
from switchyard.shared import async_redis, redis_enabled

logger = logging.getLogger("switchyard.metrics")


@state_source
async def billing_state() -> list[Metric]:
    holds = GaugeMetricFamily(
        "switchyard_holds_outstanding", "Open credit holds: requests in flight across every web process."
    )
    queue = GaugeMetricFamily(
        "switchyard_usage_queue_depth",
        "Usage events not yet written to the ledger (the Redis usage stream that Celery drains; in "
        "embedded mode the in-process writer's queue).",
    )
    parked_events = GaugeMetricFamily(
        "switchyard_usage_parked_events",
        "Usage events the writers could not store and parked (not in the ledger until retried; admin: "
        "Parked usage events). Anything above 0 needs an operator.",
    )
    parked_usd = GaugeMetricFamily(
        "switchyard_usage_parked_usd", "USD of the parked usage events (float; the table is exact)."
    )
    families: list[Metric] = [holds, queue, parked_events, parked_usd]
    try:
        count, units = await sync_to_async(_parked_totals, thread_sensitive=False)()
        parked_events.add_metric([], count)
        parked_usd.add_metric([], units / UNITS_PER_USD)
    except Exception:  # the database is away: /readyz says so; the other figures still render
        logger.exception("could not read the parked usage totals")
    if redis_enabled():
        pipe = async_redis().pipeline(transaction=False)
        pipe.zcard(HOLDS_ZSET)
        pipe.xlen(USAGE_STREAM)
        open_holds, depth = await pipe.execute()
    else:
        open_holds = await sync_to_async(_embedded_open_holds, thread_sensitive=False)()
        depth = usage.embedded_queue_depth()
    holds.add_metric([], open_holds)
    queue.add_metric([], depth)
    return families


def _parked_totals() -> tuple[int, int]:
    close_old_connections()
    return parked_usage_totals()


def _embedded_open_holds() -> int:
    return Hold.objects.filter(status=HoldStatus.OPEN, expires_at__gt=timezone.now()).count()
