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
from django.db import IntegrityError, close_old_connections, transaction
from django.utils import timezone

logger = logging.getLogger("switchyard.usage")
LAST_USED_EVERY = timedelta(minutes=1)


def _generation_fields(ev: dict[str, Any]) -> dict[str, Any]:
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
        "latency_ms": ev.get("latency_ms"),
        "ttft_ms": ev.get("ttft_ms"),
        "generation_time_ms": ev.get("generation_time_ms"),
        "error": (ev.get("error") or "")[:4000],
        "attempts": ev.get("attempts") or [],
        "created_at": datetime.fromtimestamp(ev["created"], tz=UTC),
    }


def usage_event_apply(ev: dict[str, Any]) -> bool:
    """Write one event: the generation row and exactly one usage ledger entry. True if newly written."""
    from billing.models import Hold, HoldStatus
    from billing.services import usage_charge
    from routing.models import Generation

    with transaction.atomic():
        try:
            with transaction.atomic():
                Generation.objects.create(id=ev["gen"], **_generation_fields(ev))
        except IntegrityError:
            created = False
        else:
            created = True
        # The ledger's unique (kind, source) makes a replay a no-op even if the generation row existed.
        usage_charge(
            organization_id=ev["org"],
            generation_id=ev["gen"],
            cost_units=int(ev.get("cost", 0)),
            api_key_id=ev.get("key"),
            model=ev["model"],
        )
        if ev.get("hold") and ev.get("embedded"):
            Hold.objects.filter(pk=ev["hold"]).exclude(status=HoldStatus.CHARGED).update(
                status=HoldStatus.CHARGED, settled_units=int(ev.get("cost", 0))
            )
    return created


def usage_events_apply(events: list[dict[str, Any]]) -> int:
    written = 0
    for ev in events:
        try:
            written += usage_event_apply(ev)
        except Exception:
            logger.exception("could not apply usage event %s", ev.get("gen"))
            raise
    _touch_keys(events)
    return written


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
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def put(self, event: bytes) -> None:
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
        for attempt in range(5):
            try:
                close_old_connections()
                usage_events_apply(events)
                return
            except Exception:
                logger.exception("usage write failed (attempt %d); retrying", attempt + 1)
                threading.Event().wait(0.2 * (attempt + 1))
        logger.error("dropping %d usage events after retries; their holds will expire", len(events))


_writer: EmbeddedWriter | None = None
_writer_lock = threading.Lock()


def embedded_writer() -> EmbeddedWriter:
    global _writer
    if _writer is None:
        with _writer_lock:
            if _writer is None:
                _writer = EmbeddedWriter()
    return _writer
