"""Prometheus metrics: per-request counters and histograms from the hot path, shared state read at scrape.

Per-request figures are recorded once per request, in its settlement task (off the response path):
requests by kind and outcome, latency and time-to-first-token histograms, tokens, cost, and upstream
errors by provider. Shared state (open holds, the usage queue, parked usage, Celery's queue, circuit states) lives
in Redis (or the database in embedded mode) and is read when /metrics is scraped, so every web
process reports the same deployment-wide numbers.

With several worker processes `manage.py serve` sets PROMETHEUS_MULTIPROC_DIR before they start, so
prometheus-client keeps the per-request metrics in shared files and any worker's /metrics answers for
all of them. Prometheus values are floats: the cost counter is for dashboards; the ledger is the truth.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

from django.conf import settings
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from switchyard import durability
from switchyard.errors import error_body
from switchyard.health import send_json
from switchyard.shared import async_redis, redis_enabled

logger = logging.getLogger("switchyard.metrics")

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
UNITS_PER_USD = 10**12

REQUESTS = Counter(
    "switchyard_requests",
    "Completion-API requests by kind and outcome (success, error, cancelled, or the HTTP status of a "
    "request refused before routing).",
    ["kind", "outcome"],
)
LATENCY = Histogram(
    "switchyard_request_duration_seconds",
    "Time from a routed request's arrival to its last byte.",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
TTFT = Histogram(
    "switchyard_time_to_first_token_seconds",
    "Time from a request's arrival to its first generated token, by provider.",
    ["provider"],
    buckets=TTFT_BUCKETS,
)
TOKENS = Counter("switchyard_tokens", "Tokens billed, by provider and type.", ["provider", "type"])
COST = Counter("switchyard_cost_usd", "USD charged, by provider (float; the ledger is exact).", ["provider"])
UPSTREAM_ERRORS = Counter(
    "switchyard_upstream_errors",
    "Failed provider attempts (including those failed over), by provider and reason.",
    ["provider", "reason"],
)

# Label children are looked up once per label set: the hot path pays a dict lookup, not a lock.
_children: dict[tuple[Any, ...], Any] = {}
NOT_UPSTREAM_FAULTS = {"cancelled"}


def _child(metric: Any, *labels: str) -> Any:
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def request_refused(kind: str, status: int) -> None:
    """A request answered with an error before it was routed (bad key, bad body, no credit...)."""
    _child(REQUESTS, kind, str(status)).inc()


def request_settled(event: dict[str, Any]) -> None:
    """Record one routed request from its usage event (called by the settlement task)."""
    try:
        kind = event.get("kind") or "chat"
        provider = event.get("provider") or "none"
        _child(REQUESTS, kind, event.get("status") or "error").inc()
        if event.get("latency_ms") is not None:
            _child(LATENCY, kind).observe(event["latency_ms"] / 1000)
        if event.get("ttft_ms") is not None:
            _child(TTFT, provider).observe(event["ttft_ms"] / 1000)
        tokens = event.get("tokens") or {}
        if tokens.get("prompt"):
            _child(TOKENS, provider, "prompt").inc(tokens["prompt"])
        if tokens.get("completion"):
            _child(TOKENS, provider, "completion").inc(tokens["completion"])
        if event.get("cost"):
            _child(COST, provider).inc(int(event["cost"]) / UNITS_PER_USD)
        for attempt in event.get("attempts") or ():
            reason = attempt.get("reason")
            if attempt.get("status") != 200 and reason not in NOT_UPSTREAM_FAULTS:
                _child(UPSTREAM_ERRORS, attempt.get("provider") or "unknown", reason or "error").inc()
    except Exception:  # metrics never break settlement
        logger.exception("could not record metrics for %s", event.get("gen"))


# ---- shared state, read at scrape time ---------------------------------------------------------


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


StateSource = Callable[[], Awaitable[list[Metric]]]
_state_sources: list[StateSource] = []


def state_source(source: StateSource) -> StateSource:
    """Register an app's shared-state figures, read at each scrape (billing: holds, usage queue, parked
    usage; routing: circuit states). The apps register in their AppConfig.ready, so this core module
    imports none of them. A source that fails is logged and left out; the others still render."""
    if source not in _state_sources:
        _state_sources.append(source)
    return source


async def state_families() -> list[Metric]:

    families: list[Metric] = []
    for source in _state_sources:
        try:
            families += await source()
        except Exception:  # the database or Redis is away: /readyz says so; the rest still renders
            logger.exception("could not read the shared state of %s", source.__qualname__)
    if redis_enabled():
        kept = await durability.check(async_redis())
        losses = GaugeMetricFamily(
            "switchyard_redis_data_losses",
            "Times this process found Redis's data epoch replaced: Redis lost its data (usage settled "
            "and not yet drained then is lost; see docs/failure-policy.md).",
        )
        losses.add_metric([], kept["losses_seen"])
        persistent = GaugeMetricFamily(
            "switchyard_redis_persistent", "1 when Redis keeps an append-only file, else 0."
        )
        persistent.add_metric([], 1 if durability.persistent() else 0)
        families += [losses, persistent]
        if settings.CELERY_BROKER_URL == settings.REDIS_URL:
            celery = GaugeMetricFamily(
                "switchyard_celery_queue_depth",
                "Task messages waiting in the Celery broker.",
                labels=["queue"],
            )
            celery.add_metric(["celery"], await async_redis().llen("celery"))
            families.append(celery)
    return families


async def render() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        output = generate_latest(registry)
    else:
        output = generate_latest(REGISTRY)
    state = CollectorRegistry(auto_describe=False)
    state.register(_Families(await state_families()))  # type: ignore[arg-type]
    return output + generate_latest(state)


# ---- the endpoint --------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _networks(spec: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in spec)


def allowed(scope: dict[str, Any]) -> bool:
    """The right bearer token (SWITCHYARD_METRICS_TOKEN), or a client in SWITCHYARD_METRICS_ALLOWED_NETWORKS."""
    token = settings.SWITCHYARD_METRICS_TOKEN
    if token:
        for name, value in scope.get("headers") or ():
            if name == b"authorization":
                scheme, _, given = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
                    return True
    client = scope.get("client")
    if not client:
        return False
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return False
    return any(address in net for net in _networks(tuple(settings.SWITCHYARD_METRICS_ALLOWED_NETWORKS)))


async def metrics_endpoint(scope: dict[str, Any], receive: Any, send: Any) -> None:

    if scope["method"] not in ("GET", "HEAD"):
        await send_json(send, 405, error_body(405, "Use GET."), [(b"allow", b"GET, HEAD")])
        return
    if not allowed(scope):
        message = (
            "Metrics need `Authorization: Bearer <SWITCHYARD_METRICS_TOKEN>` or a client address in "
            "SWITCHYARD_METRICS_ALLOWED_NETWORKS."
        )
        await send_json(send, 403, error_body(403, message))
        return
    try:
        body = await render()
    except Exception:
        logger.exception("could not render metrics")
        await send_json(send, 503, error_body(503, "Metrics are unavailable."))
        return
    headers = [(b"content-type", CONTENT_TYPE_LATEST.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
