"""Celery tasks: drain usage into the ledger, reap expired holds, apply Stripe events, auto top-up, audit."""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta

import orjson
from celery import shared_task
from django.conf import settings
from django.utils import timezone

import switchyard.celery  # noqa: F401  (binds these shared tasks to the configured app in any process)
from accounts.models import Organization
from billing.audit import books_audit_run, redis_epoch_record
from billing.enqueue import AUTO_TOPUP, STRIPE_EVENT_PROCESS
from billing.holds import USAGE_STREAM, holds_reap_expired, redis_usage_applied
from billing.models import Purchase, PurchaseKind, PurchaseStatus, StripeEvent, StripeEventStatus
from billing.services import STALE_PENDING, auto_topup_run, stripe_event_process
from billing.usage import event_mirrorable, usage_event_park, usage_events_store
from switchyard.durability import epoch_check_sync
from switchyard.shared import redis_enabled, sync_redis

logger = logging.getLogger("switchyard.usage")
GROUP = "ledger"
BATCH = 500


def _consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _ensure_group(client) -> None:  # type: ignore[no-untyped-def]
    try:
        client.xgroup_create(USAGE_STREAM, GROUP, id="0", mkstream=True)
    except Exception as exc:  # BUSYGROUP: it exists
        if "BUSYGROUP" not in str(exc):
            raise


def drain_once(max_batches: int = 20) -> int:
    """Read batches from the stream, write them, then ack them (ack = XDEL inside APPLY_LUA).

    Entries another consumer read but never acked (it died mid-batch) are claimed after
    SWITCHYARD_USAGE_CLAIM_IDLE_MS (30 s) and redone; the database write is idempotent and APPLY_LUA
    only counts an entry it deletes.
    """
    client = sync_redis()
    _note_epoch(client)
    _ensure_group(client)
    total = 0
    consumer = _consumer()
    idle_ms = settings.SWITCHYARD_USAGE_CLAIM_IDLE_MS
    claimed = client.xautoclaim(USAGE_STREAM, GROUP, consumer, idle_ms, "0-0", count=BATCH)
    batches = [claimed[1]] if claimed and claimed[1] else []
    for _ in range(max_batches):
        if not batches:
            read = client.xreadgroup(GROUP, consumer, {USAGE_STREAM: ">"}, count=BATCH)
            if not read:
                break
            batches.append(read[0][1])
        entries = batches.pop()
        events: list[dict] = []
        sids: dict[int, str] = {}  # id(event) -> its stream entry
        unreadable: list[str] = []
        for stream_id, fields in entries:
            if not fields:
                continue  # deleted under us by another consumer's APPLY: already done
            sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
            raw = fields[b"e"] if b"e" in fields else fields.get("e", b"")
            try:
                ev = orjson.loads(raw)
                if not isinstance(ev, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
                raw_bytes = raw if isinstance(raw, bytes) else str(raw).encode()
                usage_event_park(event=None, raw=raw_bytes, reason=str(exc), mirrored=False)
                unreadable.append(sid)
                continue
            sids[id(ev)] = sid
            events.append(ev)
        # Isolates a bad event (parked; its cost still moves into the mirror below, so the
        # organisation cannot spend what it owes). An outage raises: the batch stays unacked and is
        # re-claimed, nothing parked.
        stored = usage_events_store(events, mirrored=event_mirrorable)
        by_org: dict[int, list[tuple[str, int, int | None]]] = {}
        for ev in [*stored.written, *stored.parked]:
            sid = sids[id(ev)]
            if not event_mirrorable(ev):
                unreadable.append(sid)  # no organisation or cost to move: just take it off the stream
                continue
            by_org.setdefault(ev["org"], []).append((sid, ev.get("cost", 0), ev.get("key")))
        # The organisations' ledger versions once these rows are in: APPLY_LUA compares them with the
        # mirror's, for a mirror loaded from the database after them (a Redis that lost its data).
        # Read after the write commits (its per-event isolation needs its own transactions), so at or
        # after the version the rows left.
        versions = dict(Organization.objects.filter(pk__in=list(by_org)).values_list("pk", "ledger_version"))
        for org_id, pairs in by_org.items():
            redis_usage_applied(org_id, pairs, version=versions.get(org_id))
        if unreadable:
            client.xdel(USAGE_STREAM, *unreadable)
        ids = [e[0] for e in entries]
        if ids:
            client.xack(USAGE_STREAM, GROUP, *ids)
        total += len(events)
    return total


_recorded_epoch: list[str] = []


def _note_epoch(client) -> None:  # type: ignore[no-untyped-def]
    """Store each Redis data epoch this worker sees, so the auditor can report a loss between two."""
    epoch = epoch_check_sync(client)
    if epoch not in _recorded_epoch:
        redis_epoch_record(epoch=epoch)
        _recorded_epoch[:] = [epoch]


@shared_task(
    acks_late=True, ignore_result=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=5
)
def usage_drain() -> int:
    if not redis_enabled():
        return 0
    return drain_once()


@shared_task(acks_late=True, ignore_result=True)
def holds_reap() -> int:
    return holds_reap_expired()


@shared_task(
    name=STRIPE_EVENT_PROCESS,
    acks_late=True,
    ignore_result=True,
    autoretry_for=(Exception,),
    retry_backoff=True,
    max_retries=8,
)
def stripe_event_process_task(event_id: str) -> str:
    return stripe_event_process(event_id=event_id)


@shared_task(acks_late=True, ignore_result=True)
def stripe_events_retry() -> int:
    """Safety net: events whose task was lost, deferred events, and auto top-ups left pending by a dead worker."""
    now = timezone.now()
    ids = list(
        StripeEvent.objects.filter(
            status__in=[StripeEventStatus.RECEIVED, StripeEventStatus.DEFERRED],
            received_at__lt=now - timedelta(seconds=30),
        ).values_list("id", flat=True)[:500]
    )
    for event_id in ids:
        stripe_event_process_task.delay(event_id)
    stale = Purchase.objects.filter(
        kind=PurchaseKind.AUTO_TOPUP, status=PurchaseStatus.PENDING, created_at__lt=now - STALE_PENDING
    ).values_list("organization_id", flat=True)
    for org_id in stale:
        auto_topup_task.delay(org_id)
    return len(ids)


@shared_task(name=AUTO_TOPUP, acks_late=True, ignore_result=True)
def auto_topup_task(organization_id: int) -> int | None:
    purchase = auto_topup_run(organization_id=organization_id)
    return purchase.pk if purchase else None


@shared_task(acks_late=True, ignore_result=True)
def books_audit() -> dict:
    return books_audit_run().as_dict()
