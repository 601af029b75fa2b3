"""Usage events: how a finished request's generation record and charge leave the hot path and land.

The hot path builds one event per request (success, failure or cancellation) and hands it on with
the hold settlement. Embedded mode drains events on a writer thread inside the web process; full
mode queues them on a Redis stream that Celery workers drain in batches. Either way the write is
idempotent on the generation id (unique constraints), so a redelivered batch changes nothing.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.db import close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Organization

logger = logging.getLogger("switchyard.usage")
LAST_USED_EVERY = timedelta(minutes=1)


def generation_fields(ev: dict[str, Any]) -> dict[str, Any]:
    tokens = ev.get("tokens") or {}
    return {
        "organization_id": ev["org"],
        "api_key_id": ev.get("key"),
        "endpoint_id": ev.get("endpoint"),
        "model": ev["model"],
        "provider": ev.get("provider") or "",
        "kind": ev.get("kind", "chat"),
        "status": ev["status"],
        "streamed": bool(ev.get("streamed")),
        "cancelled": bool(ev.get("cancelled")),
        "finish_reason": ev.get("finish_reason") or "",
        "native_finish_reason": ev.get("native_finish_reason") or "",
        "tokens_prompt": tokens.get("prompt", 0),
        "tokens_completion": tokens.get("completion", 0),
        "tokens_cached": tokens.get("cached", 0),
        "tokens_cache_write": tokens.get("cache_write", 0),
        "tokens_reasoning": tokens.get("reasoning", 0),
        "usage_estimated": bool(ev.get("estimated")),
        "cost_units": int(ev.get("cost", 0)),
        "uncharged_units": max(int(ev.get("uncharged", 0)), 0),
        "latency_ms": ev.get("latency_ms"),
        "ttft_ms": ev.get("ttft_ms"),
        "generation_time_ms": ev.get("generation_time_ms"),
        "error": (ev.get("error") or "")[:4000],
        "attempts": ev.get("attempts") or [],
        "is_byok": bool(ev.get("byok")),
        "created_at": datetime.fromtimestamp(ev["created"], tz=UTC),
    }


def usage_event_apply(ev: dict[str, Any]) -> bool:
    """Write one event (see usage_events_apply). True if its generation row was new."""
    return usage_events_apply([ev]) == 1


# One INSERT for a batch's usage entries; the (kind, source) unique constraint makes a redelivered
# event a no-op, and RETURNING says which rows really went in (PostgreSQL, and SQLite >= 3.35).
_LEDGER_INSERT = (
    "INSERT INTO billing_ledgerentry "
    "(organization_id, kind, amount_units, source, reason, api_key_id, created_by_id, created_at) "
    "VALUES {values} ON CONFLICT (kind, source) DO NOTHING RETURNING organization_id, amount_units"
)


def usage_events_apply(events: list[dict[str, Any]]) -> int:
    """Write a batch in one transaction: generation rows, exactly one usage ledger entry per charged
    generation, and one balance update per organisation. Idempotent by generation id through unique
    constraints (never a prior read), so a redelivered batch changes nothing. Returns new generations.
    """
    from billing.models import EntryKind, Hold, HoldStatus
    from routing.models import Generation

    unique: dict[str, dict[str, Any]] = {}
    for ev in events:
        unique.setdefault(ev["gen"], ev)  # a duplicated event (a retried settle) counts once
    if not unique:
        return 0
    now = timezone.now()
    with transaction.atomic():
        before = set(Generation.objects.filter(pk__in=list(unique)).values_list("pk", flat=True))
        Generation.objects.bulk_create(
            [Generation(id=gen_id, **generation_fields(ev)) for gen_id, ev in unique.items()],
            ignore_conflicts=True,
        )
        # A request that produced nothing (every provider failed) charges nothing and leaves no entry.
        charged = [ev for ev in unique.values() if int(ev.get("cost", 0)) or ev.get("status") == "success"]
        moved: dict[int, list[int]] = {}
        created = connection.ops.adapt_datetimefield_value(now)
        with connection.cursor() as cursor:
            for i in range(0, len(charged), 200):
                chunk = charged[i : i + 200]
                params: list[Any] = []
                for ev in chunk:
                    params += [
                        int(ev["org"]),
                        EntryKind.USAGE.value,
                        -int(ev.get("cost", 0)),
                        ev["gen"],
                        str(ev.get("model", ""))[:300],
                        ev.get("key"),
                        None,
                        created,
                    ]
                values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
                cursor.execute(_LEDGER_INSERT.format(values=values), params)
                for org_id, amount in cursor.fetchall():
                    moved.setdefault(int(org_id), []).append(int(amount))
        for org_id in sorted(moved):  # one update per organisation, in a fixed order (no deadlocks)
            Organization.objects.filter(pk=org_id).update(
                balance_units=F("balance_units") + sum(moved[org_id]),
                ledger_version=F("ledger_version") + len(moved[org_id]),
            )
        settled = [
            (ev["hold"], int(ev.get("cost", 0)))
            for ev in unique.values()
            if ev.get("hold") and ev.get("embedded")
        ]
        for hold_id, cost in settled:
            Hold.objects.filter(pk=hold_id).exclude(status=HoldStatus.CHARGED).update(
                status=HoldStatus.CHARGED, settled_units=cost
            )
    written = len(unique) - len(before)
    _touch_keys(events)
    _auto_topup(events)
    return written


def _auto_topup(events: list[dict[str, Any]]) -> None:
    """Balances only fall here, so this is where a threshold can be crossed; never fails the batch."""
    from billing.stripe_client import stripe_enabled

    if not stripe_enabled():
        return
    from billing.tasks import auto_topup_enqueue

    try:
        auto_topup_enqueue(sorted({int(ev["org"]) for ev in events if ev.get("cost")}))
    except Exception:
        logger.exception("could not queue auto top-ups")


def _touch_keys(events: list[dict[str, Any]]) -> None:
    """last_used_at moves at most once a minute per key, never once per request."""
    from accounts.models import ApiKey

    key_ids = {ev["key"] for ev in events if ev.get("key")}
    if not key_ids:
        return
    now = timezone.now()
    stale = now - LAST_USED_EVERY
    from django.db.models import Q

    ApiKey.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale), pk__in=key_ids).update(
        last_used_at=now
    )


class EmbeddedWriter:
    """A daemon thread that writes usage events in batches (embedded mode's queue)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        # Settled events not yet in the database, by generation id, so GET /generation never races the
        # writer. Plain dict operations are atomic under the GIL.
        self.pending: dict[str, bytes] = {}
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def put(self, event: bytes, generation_id: str | None = None) -> None:
        if generation_id:
            self.pending[generation_id] = event
        self._queue.put(event)

    def flush(self, timeout: float = 10.0) -> None:
        """Block until every queued event is written (tests, shutdown)."""
        done = threading.Event()
        self._queue.put(b"__flush__" + str(id(done)).encode())
        self._flush_events[id(done)] = done
        done.wait(timeout)

    _flush_events: dict[int, threading.Event] = {}

    def close(self) -> None:
        self.flush(timeout=10)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item]
            while len(batch) < 200:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events = []
            flushes = []
            for raw in batch:
                if raw is None:
                    continue
                if raw.startswith(b"__flush__"):
                    flushes.append(int(raw[len(b"__flush__") :]))
                    continue
                events.append(orjson.loads(raw))
            if events:
                self._write(events)
            for token in flushes:
                event = self._flush_events.pop(token, None)
                if event:
                    event.set()

    def _write(self, events: list[dict[str, Any]]) -> None:
        """Retry until the database takes the batch: dropping it would lose money (the ledger write is
        idempotent, so a retry after a half-visible failure is safe)."""
        attempt = 0
        while True:
            try:
                close_old_connections()
                usage_events_apply(events)
                break
            except Exception:
                attempt += 1
                logger.exception("usage write failed (attempt %d); retrying", attempt)
                threading.Event().wait(min(0.2 * attempt, 5.0))
        for ev in events:
            self.pending.pop(ev.get("gen", ""), None)


_writer: EmbeddedWriter | None = None
_writer_lock = threading.Lock()


def embedded_writer() -> EmbeddedWriter:
    global _writer
    if _writer is None:
        with _writer_lock:
            if _writer is None:
                _writer = EmbeddedWriter()
    return _writer
