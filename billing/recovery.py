"""Usage a Redis data loss took, found and written again by the web process that settled it.

A settled usage event waits in the Redis usage stream until a Celery worker writes it to the ledger
(about a second). Each web process also keeps every event it settled for
SWITCHYARD_USAGE_KEEP_SECONDS, and watches the Redis data epoch (switchyard/durability.py) once a
second. When the epoch changes, Redis lost its data: after a grace period (a worker's batch read
before the loss may still commit), the events settled before the change that the database does not
have are written here, straight to the ledger (idempotent on the generation id, as the drain is),
the organisation's Redis mirror learns of the charge as of a grant (billing.holds.CREDIT_LUA, by
ledger version), and each is recorded as an `usage_unrecorded` audit finding, repaired.

What this cannot recover (docs/failure-policy.md): events settled longer than the keep window before
the loss and not yet drained (the drain was down), and events of a web process that died with Redis.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

import orjson
from django.db import transaction

from accounts.models import Organization
from billing.audit import finding_record
from billing.holds import redis_balance_sync
from billing.models import FindingKind
from billing.records import usage_records
from billing.usage import usage_events_apply
from switchyard import durability
from switchyard.db import db_call
from switchyard.shared import async_redis, redis_enabled, setting, start_shared

logger = logging.getLogger("switchyard.usage")

WATCH_SECONDS = 1.0
GRACE_SECONDS = 10.0
# The keep window is also bounded by count: ~700 bytes an event, so at most ~14 MB per process, which
# still covers 5 s at 4,000 settled requests a second (the drain runs every second).
MAX_KEPT = 20_000
# Events are kept in blocks: each block joins up to BLOCK_EVENTS events (or BLOCK_SECONDS of them) into
# one bytes object. Thousands of small long-lived objects interleaved with each request's short-lived
# ones pinned the allocator's heap: measured at c=64, RSS grew from 89 to 199 MB with them kept one by
# one; one allocation per block is freed whole when its block leaves the window.
BLOCK_EVENTS = 500
BLOCK_SECONDS = 0.25

_kept: collections.deque[tuple[float, int, bytes]] = collections.deque()  # (sealed at, events, block)
_open: list[bytes] = []  # the block being filled
_state = {"opened": 0.0, "kept": 0}  # when _open began; events in _kept
_watcher: asyncio.Task[None] | None = None
recovered_total = 0


def usage_kept(event: bytes) -> None:
    """Keep a settled event (full mode) until it is surely in the ledger or the keep window ends."""
    now = time.monotonic()
    if not _open:
        _state["opened"] = now
    _open.append(event)
    if len(_open) >= BLOCK_EVENTS or now - _state["opened"] >= BLOCK_SECONDS:
        # orjson output holds no raw newline, so a newline separates the events of a block.
        _kept.append((now, len(_open), b"\n".join(_open)))
        _state["kept"] += len(_open)
        _open.clear()
    horizon = now - float(setting("SWITCHYARD_USAGE_KEEP_SECONDS"))
    while _kept and (_kept[0][0] < horizon or _state["kept"] > MAX_KEPT):
        _state["kept"] -= _kept.popleft()[1]


def kept_events() -> list[bytes]:
    """Every event kept now, oldest first."""
    return [event for _, _, block in _kept for event in block.split(b"\n")] + list(_open)


def watch_start() -> None:
    """Start watching the Redis data epoch (full mode, once per web process and event loop)."""
    global _watcher
    if redis_enabled() and (
        _watcher is None or _watcher.done() or _watcher.get_loop() is not asyncio.get_running_loop()
    ):
        _watcher = start_shared(_watch())


async def _watch() -> None:
    seen: str | None = None
    while True:
        try:
            epoch = await durability.epoch_check(async_redis())
            if seen is not None and epoch != seen:
                lost = kept_events()  # the loss happened before now
                start_shared(_recover_later(lost, seen, epoch))
            seen = epoch
        except Exception:
            logger.debug("could not read the Redis data epoch", exc_info=True)
        await asyncio.sleep(WATCH_SECONDS)


async def _recover_later(events: list[bytes], old: str, new: str) -> None:
    global recovered_total
    await asyncio.sleep(GRACE_SECONDS)
    try:
        written = await db_call(usage_recover, events=[orjson.loads(e) for e in events], epoch=old)
    except Exception:
        logger.exception("could not check %d settled events after Redis lost its data", len(events))
        return
    recovered_total += len(written)
    if written:
        logger.error(
            "Redis lost its data (epoch %s became %s): %d settled usage events were not in the ledger; "
            "written now: %s",
            old,
            new,
            len(written),
            ", ".join(written[:20]),
        )


def usage_recover(*, events: list[dict[str, Any]], epoch: str) -> list[str]:
    """Write the events the ledger lacks; returns their generation ids. Each event is its own unit, so
    one that cannot be written (its organisation deleted since) never blocks the others."""
    by_gen = {ev["gen"]: ev for ev in events}
    present = set(usage_records().generations().filter(pk__in=list(by_gen)).values_list("pk", flat=True))
    written: list[str] = []
    for gen, ev in by_gen.items():
        if gen in present:
            continue
        try:
            with transaction.atomic():
                if not usage_events_apply([ev]):
                    continue  # written meanwhile by a worker's late batch
                version = (
                    Organization.objects.filter(pk=ev["org"]).values_list("ledger_version", flat=True).get()
                )
        except Exception:
            logger.exception("could not write the lost usage event %s", gen)
            continue
        cost = int(ev.get("cost", 0))
        if cost:
            # As for a grant: the mirror moves unless it was loaded from a balance that had this entry.
            redis_balance_sync(int(ev["org"]), -cost, version)
        written.append(gen)
        finding_record(
            kind=FindingKind.USAGE_UNRECORDED,
            subject=gen,
            organization_id=int(ev["org"]),
            expected=-cost,
            detail=f"answered and settled into Redis epoch {epoch}, which was lost before the drain "
            "wrote it; written by the web process that settled it",
            repaired=True,
        )
    return written
