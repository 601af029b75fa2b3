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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.db import InterfaceError, OperationalError, close_old_connections, connection, models, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import ApiKey, Organization
from billing.enqueue import auto_topup_later
from billing.models import EntryKind, Hold, HoldStatus, ParkedUsageEvent, ParkedUsageStatus
from billing.records import usage_records
from billing.selectors import auto_topup_due
from billing.stripe_client import stripe_enabled
from switchyard.text import clean_json, clean_text, has_control

logger = logging.getLogger("switchyard.usage")
LAST_USED_EVERY = timedelta(minutes=1)


# Column bounds of routing.models.Generation (and LedgerEntry.reason): text is cut to fit, never refused.
TEXT_LIMITS = {
    "model": 128,
    "provider": 64,
    "kind": 16,
    "status": 16,
    "finish_reason": 32,
    "native_finish_reason": 64,
}
ERROR_LIMIT = 4000
ATTEMPTS_MAX = 50
ATTEMPT_TEXT_LIMIT = 1000
GENERATION_ID_MAX = 40  # Generation.id
COUNT_MAX = 2**31 - 1  # PositiveIntegerField
MONEY_MAX = 2**63 - 1  # BigIntegerField


def usage_event_bound(event: dict[str, Any]) -> dict[str, Any]:
    """Clean and bound the free text of a usage event in place as it is built (model, provider,
    reasons, error, attempts' messages from upstream): what is queued is small and storable. The
    writer applies the same rules again (generation_fields), for events queued by anything else."""
    for name, limit in TEXT_LIMITS.items():
        if isinstance(event.get(name), str):
            event[name] = clean_text(event[name], limit)
    if isinstance(event.get("error"), str):
        event["error"] = clean_text(event["error"], ERROR_LIMIT, prose=True)
    if isinstance(event.get("attempts"), list):
        event["attempts"] = clean_json(event["attempts"][:ATTEMPTS_MAX], limit=ATTEMPT_TEXT_LIMIT)
    return event


def _integer(ev: dict[str, Any], name: str, value: Any, *, lo: int = 0, hi: int = COUNT_MAX) -> int:
    """A count, duration or amount, exactly as given: money and tokens are never guessed, so a value
    that is not an integer in range makes the event unwritable (it is parked, not rounded)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _optional(ev: dict[str, Any], name: str) -> int | None:
    value = ev.get(name)
    return None if value is None else _integer(ev, name, value)


def _reference(ev: dict[str, Any], name: str) -> int | None:
    value = ev.get(name)
    return None if value is None else _integer(ev, name, value, lo=1, hi=MONEY_MAX)


def event_generation_id(ev: dict[str, Any]) -> str:
    gen = ev.get("gen")
    if not isinstance(gen, str) or not gen or len(gen) > GENERATION_ID_MAX or has_control(gen):
        raise ValueError(f"gen must be a generation id, got {str(gen)[:60]!r}")
    return gen


def generation_fields(ev: dict[str, Any]) -> dict[str, Any]:
    """The generation row of a usage event. Free text (model, provider, reasons, errors, attempts) is
    cleaned and cut to its column, whatever built the event; numbers and references must already be
    right (ValueError otherwise: the event is parked with that reason)."""
    tokens = ev.get("tokens") or {}
    if not isinstance(tokens, dict):
        raise ValueError("tokens must be an object")
    attempts = ev.get("attempts") or []
    if not isinstance(attempts, list):
        raise ValueError("attempts must be a list")
    created = ev.get("created")
    if isinstance(created, bool) or not isinstance(created, int | float):
        raise ValueError("created must be a Unix time")
    text = {name: clean_text(ev.get(name), limit) for name, limit in TEXT_LIMITS.items()}
    if not text["model"]:
        raise ValueError("model is required")
    return {
        "organization_id": _reference(ev, "org") or _missing("org"),
        "api_key_id": _reference(ev, "key"),
        "endpoint_id": _reference(ev, "endpoint"),
        "model": text["model"],
        "provider": text["provider"],
        "kind": text["kind"] or "chat",
        "status": text["status"] or _missing("status"),
        "streamed": bool(ev.get("streamed")),
        "cancelled": bool(ev.get("cancelled")),
        "finish_reason": text["finish_reason"],
        "native_finish_reason": text["native_finish_reason"],
        "tokens_prompt": _integer(ev, "tokens.prompt", tokens.get("prompt", 0)),
        "tokens_completion": _integer(ev, "tokens.completion", tokens.get("completion", 0)),
        "tokens_cached": _integer(ev, "tokens.cached", tokens.get("cached", 0)),
        "tokens_cache_write": _integer(ev, "tokens.cache_write", tokens.get("cache_write", 0)),
        "tokens_reasoning": _integer(ev, "tokens.reasoning", tokens.get("reasoning", 0)),
        "usage_estimated": bool(ev.get("estimated")),
        "cost_units": event_cost(ev),
        "uncharged_units": max(int(ev.get("uncharged", 0)), 0),
        "latency_ms": _optional(ev, "latency_ms"),
        "ttft_ms": _optional(ev, "ttft_ms"),
        "generation_time_ms": _optional(ev, "generation_time_ms"),
        "error": clean_text(ev.get("error"), ERROR_LIMIT, prose=True),
        "attempts": clean_json(attempts[:ATTEMPTS_MAX], limit=ATTEMPT_TEXT_LIMIT),
        "is_byok": bool(ev.get("byok")),
        "created_at": datetime.fromtimestamp(created, tz=UTC),
    }


def _missing(name: str) -> Any:
    raise ValueError(f"{name} is required")


def event_cost(ev: dict[str, Any]) -> int:
    return _integer(ev, "cost", ev.get("cost", 0), hi=MONEY_MAX)


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
    records = usage_records()
    Generation = records.generation

    rows: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for ev in events:
        gen_id = event_generation_id(ev)
        if gen_id not in rows:  # a duplicated event (a retried settle) counts once
            rows[gen_id] = (ev, generation_fields(ev))
    if not rows:
        return 0
    now = timezone.now()
    with transaction.atomic():
        before = set(records.generations().filter(pk__in=list(rows)).values_list("pk", flat=True))
        records.generations().bulk_create(
            [Generation(id=gen_id, **fields) for gen_id, (_, fields) in rows.items()],
            ignore_conflicts=True,
        )
        # A request that produced nothing (every provider failed) charges nothing and leaves no entry.
        charged = [
            (gen_id, fields)
            for gen_id, (_, fields) in rows.items()
            if fields["cost_units"] or fields["status"] == "success"
        ]
        moved: dict[int, list[int]] = {}
        created = connection.ops.adapt_datetimefield_value(now)
        with connection.cursor() as cursor:
            for i in range(0, len(charged), 200):
                chunk = charged[i : i + 200]
                params: list[Any] = []
                for gen_id, fields in chunk:
                    params += [
                        fields["organization_id"],
                        EntryKind.USAGE.value,
                        -fields["cost_units"],
                        gen_id,
                        fields["model"],
                        fields["api_key_id"],
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
            (ev["hold"], fields["cost_units"])
            for ev, fields in rows.values()
            if isinstance(ev.get("hold"), str) and ev.get("embedded")
        ]
        for hold_id, cost in settled:
            Hold.objects.filter(pk=hold_id).exclude(status=HoldStatus.CHARGED).update(
                status=HoldStatus.CHARGED, settled_units=cost
            )
    written = len(rows) - len(before)
    # After the commit, and never failing it: the usage is written, so a failure here must not make
    # the caller retry or park the events (last_used_at is advisory; top-ups have their own sweep).
    try:
        _touch_keys([ev for ev, _ in rows.values()])
    except Exception:
        logger.exception("could not update last_used_at after writing %s", ", ".join(list(rows)[:5]))
    _auto_topup([ev for ev, _ in rows.values()])
    return written


def _auto_topup(events: list[dict[str, Any]]) -> None:
    """Balances only fall here, so this is where a threshold can be crossed; never fails the batch."""
    if not stripe_enabled():
        return
    try:
        for org_id in auto_topup_due(
            organization_ids=sorted({int(ev["org"]) for ev in events if ev.get("cost")})
        ):
            auto_topup_later(org_id)
    except Exception:
        logger.exception("could not queue auto top-ups")


def _touch_keys(events: list[dict[str, Any]]) -> None:
    """last_used_at moves at most once a minute per key, never once per request."""
    key_ids = {ev["key"] for ev in events if ev.get("key")}
    if not key_ids:
        return
    now = timezone.now()
    stale = now - LAST_USED_EVERY
    ApiKey.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale), pk__in=key_ids).update(
        last_used_at=now
    )


# ---- one bad event never blocks the others ------------------------------------------------------


def is_outage(exc: BaseException) -> bool:
    """The database (or the way to it) failed, not the event: the whole batch is retried and nothing is
    parked, since parking money because the database blinked would drop it from the ledger. Anything
    else (a constraint, a value the column refuses, a malformed event) is the event's own fault."""
    return isinstance(exc, OperationalError | InterfaceError)


@dataclass(slots=True)
class StoreResult:
    written: list[dict[str, Any]] = field(default_factory=list)  # in the database (new or already)
    parked: list[dict[str, Any]] = field(default_factory=list)  # in ParkedUsageEvent instead


def event_mirrorable(ev: dict[str, Any]) -> bool:
    """Full mode: an event whose cost APPLY_LUA can move in the Redis mirror (integer org, cost, key)."""
    org, cost, key = ev.get("org"), ev.get("cost", 0), ev.get("key")
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (org, cost))
    return ints and cost >= 0 and (key is None or (isinstance(key, int) and not isinstance(key, bool)))


def _never(ev: dict[str, Any]) -> bool:
    return False


def usage_events_store(
    events: list[dict[str, Any]], *, mirrored: Callable[[dict[str, Any]], bool] = _never
) -> StoreResult:
    """Write a batch; when it fails, write each event alone and park each that still fails with its
    reason (`mirrored(ev)`: full mode moves that parked event's cost into the Redis mirror right after).
    Raises only for an outage (see is_outage): the caller retries the whole batch, parking nothing."""
    if not events:
        return StoreResult()
    try:
        usage_events_apply(events)
        return StoreResult(written=list(events))
    except Exception as exc:
        if is_outage(exc):
            raise
        logger.warning(
            "usage batch of %d event(s) (%s) failed (%s: %s); writing them one by one",
            len(events),
            _gen_ids(events),
            type(exc).__name__,
            clean_text(exc, 300, prose=True),
        )
    result = StoreResult()
    for ev in events:
        try:
            usage_event_write_alone(ev)
            result.written.append(ev)
        except Exception as exc:
            if is_outage(exc):
                raise
            usage_event_park(
                event=ev, raw=orjson.dumps(ev), reason=usage_failure_reason(exc), mirrored=mirrored(ev)
            )
            result.parked.append(ev)
    return result


def usage_event_write_alone(ev: dict[str, Any]) -> None:
    """Write one event; when the database refuses it, once more without an API key or endpoint that
    was deleted in the meantime. Raises the first failure when that does not help."""
    try:
        usage_events_apply([ev])
        return
    except Exception as exc:
        if is_outage(exc):
            raise
        first = exc
    repaired = _without_vanished_references(ev)
    if repaired is None:
        raise first
    try:
        usage_events_apply([repaired])
    except Exception as exc:
        if is_outage(exc):
            raise
        raise first from exc


def usage_failure_reason(exc: BaseException) -> str:
    return clean_text(f"{type(exc).__name__}: {exc}", 2000, prose=True)


def _without_vanished_references(ev: dict[str, Any]) -> dict[str, Any] | None:
    """The event with its API key and endpoint dropped when those rows were deleted while it was in
    flight (both are optional on the generation row: the charge still belongs to the organisation).
    None when there is nothing to drop."""
    out = dict(ev)
    rows: tuple[tuple[str, models.Manager[Any]], ...] = (
        ("key", ApiKey.objects),
        ("endpoint", usage_records().endpoints()),
    )
    for name, manager in rows:
        value = ev.get(name)
        if isinstance(value, int) and not manager.filter(pk=value).exists():
            out[name] = None
    return out if out != ev else None


def usage_event_park(*, event: dict[str, Any] | None, raw: bytes, reason: str, mirrored: bool) -> None:
    """Keep an unwritable event in the dead-letter table (billing.models.ParkedUsageEvent) and say so
    in the log with its generation id. A redelivered event updates its open row (one per generation).
    Embedded mode keeps its hold's charge reserved (settled) until a retry writes it or an operator
    dismisses it, so the organisation cannot spend what it owes meanwhile."""
    ev = event if isinstance(event, dict) else {}
    gen = ev.get("gen") if isinstance(ev.get("gen"), str) else ""
    gen = clean_text(gen, 64)
    org = ev.get("org") if isinstance(ev.get("org"), int) and not isinstance(ev.get("org"), bool) else None
    try:
        cost = event_cost(ev)
    except ValueError:
        cost = 0
    # orjson's own output never holds a raw NUL (it escapes control characters); anything else is
    # kept readable and storable (PostgreSQL refuses NUL in text).
    text = raw.decode("utf-8", "backslashreplace").replace("\x00", "\\u0000")
    now = timezone.now()
    with transaction.atomic():
        updated = 0
        if gen:
            updated = ParkedUsageEvent.objects.filter(
                generation_id=gen, status=ParkedUsageStatus.PARKED
            ).update(attempts=F("attempts") + 1, last_seen_at=now, reason=reason, mirrored=mirrored)
        if not updated:
            ParkedUsageEvent.objects.create(
                generation_id=gen,
                org_id=org,
                cost_units=cost,
                raw=text,
                reason=reason,
                mirrored=mirrored,
                first_seen_at=now,
                last_seen_at=now,
            )
        hold = ev.get("hold")
        if isinstance(hold, str) and ev.get("embedded"):
            Hold.objects.filter(pk=hold, status=HoldStatus.OPEN).update(
                status=HoldStatus.SETTLED, settled_units=cost
            )
    logger.error(
        "usage event %s parked (org %s, cost %s picodollars): %s; it is not in the ledger until retried "
        "(admin: Parked usage events)",
        gen or "without a generation id",
        org,
        cost,
        reason,
        extra={"generation_id": gen or None},
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

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until every event queued so far is written or parked (tests, shutdown). False when
        `timeout` passed first (the database is unreachable: the writer is still retrying)."""
        done = threading.Event()
        self._flush_events[id(done)] = done
        self._queue.put(b"__flush__" + str(id(done)).encode())
        return done.wait(timeout)

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
                try:
                    events.append(orjson.loads(raw))
                except orjson.JSONDecodeError as exc:
                    self._write_unreadable(raw, exc)
            if events:
                self._write(events)
            for token in flushes:
                event = self._flush_events.pop(token, None)
                if event:
                    event.set()

    def _write(self, events: list[dict[str, Any]]) -> None:
        """Write the batch, isolating any event the database refuses (parked, see usage_events_store).
        Only an outage is retried, for as long as it lasts: dropping the batch would lose money, and the
        write is idempotent, so a retry after a half-visible failure is safe."""
        attempt = 0
        while True:
            try:
                close_old_connections()
                usage_events_store([ev for ev in events if isinstance(ev, dict)])
                for raw in (ev for ev in events if not isinstance(ev, dict)):
                    usage_event_park(
                        event=None, raw=orjson.dumps(raw), reason="not a JSON object", mirrored=False
                    )
                break
            except Exception as exc:
                attempt += 1
                # Not an outage here means parking itself failed: a bug, retried the same way rather
                # than dropping the events.
                logger.log(
                    logging.ERROR if attempt <= 3 or attempt % 50 == 0 else logging.DEBUG,
                    "usage write of %d event(s) (%s) failed (attempt %d; %s); retrying",
                    len(events),
                    _gen_ids(events),
                    attempt,
                    "database unavailable" if is_outage(exc) else "unexpected",
                    exc_info=True,
                )
                threading.Event().wait(min(0.2 * attempt, 5.0))
        for ev in events:
            if isinstance(ev, dict) and isinstance(ev.get("gen"), str):
                self.pending.pop(ev["gen"], None)

    def _write_unreadable(self, raw: bytes, exc: Exception) -> None:
        while True:
            try:
                close_old_connections()
                usage_event_park(event=None, raw=raw, reason=usage_failure_reason(exc), mirrored=False)
                return
            except Exception:
                logger.exception("could not park an unreadable usage event; retrying")
                threading.Event().wait(1.0)


def _gen_ids(events: list[Any], shown: int = 5) -> str:
    ids = [str(ev.get("gen")) for ev in events[:shown] if isinstance(ev, dict)]
    more = f" and {len(events) - shown} more" if len(events) > shown else ""
    return ", ".join(ids) + more


_writer: EmbeddedWriter | None = None
_writer_lock = threading.Lock()


def embedded_writer() -> EmbeddedWriter:
    global _writer
    if _writer is None:
        with _writer_lock:
            if _writer is None:
                _writer = EmbeddedWriter()
    return _writer


def embedded_queue_depth() -> int:
    """Usage events queued in this process's embedded writer, not yet written (0 without one)."""
    writer = _writer
    return writer._queue.qsize() if writer is not None else 0


def embedded_writer_flush(timeout: float) -> None:
    """Write what this process's embedded writer still holds (switchyard/drain.py, at shutdown)."""
    if _writer is not None:
        _writer.flush(timeout)
