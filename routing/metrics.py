"""Routing's shared state for /metrics (switchyard/metrics.py reads it at each scrape): each endpoint's
circuit breaker state. Registered in RoutingConfig.ready."""

from __future__ import annotations

import time

from prometheus_client.core import GaugeMetricFamily, Metric

from routing.catalog.snapshot import catalog
from routing.health import BREAKER_KEY, book, cooldown, parse_open
from switchyard.metrics import state_source
from switchyard.shared import async_redis, redis_enabled


@state_source
async def circuit_state() -> list[Metric]:
    circuits = GaugeMetricFamily(
        "switchyard_circuit_state",
        "Circuit breaker per endpoint: 0 closed, 1 half-open, 2 open.",
        labels=["endpoint_id", "provider", "model"],
    )
    opened = (
        parse_open(await async_redis().hgetall(BREAKER_KEY)) if redis_enabled() else dict(book.local.opened)
    )
    now, wait = time.time(), cooldown()
    snapshot = await catalog.get()
    for model in snapshot.models.values():
        for ep in model.endpoints:
            since = opened.get(ep.id)
            state = 0 if since is None else (2 if now - since < wait else 1)
            circuits.add_metric([str(ep.id), ep.provider_slug, model.slug], state)
    return [circuits]
