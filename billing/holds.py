"""Credit holds: reserve a request's worst-case cost up front so concurrent requests never overspend.

Embedded mode keeps holds in the database (one short transaction to place; settlement rides with the
usage write). Full mode keeps a mirror of each organisation's money in one Redis hash and moves it
only with HINCRBY inside Lua scripts: Redis's integers are exact int64, while Lua numbers are
doubles, so the scripts never do arithmetic on amounts themselves and decide on the sign of an
HINCRBY result (exact) instead.

Redis hash `sy:o:{org}` fields (picodollars): bal (ledger balance as last mirrored), held (open
holds), pending (settled costs not yet written to the ledger), avail = bal - held - pending, and
initver, the organisation's ledger version the mirror was loaded at. A hash without initver is only
partial (a Redis that lost its data, then received settlements or drained usage for the
organisation): the hold path treats it as not mirrored and INIT completes it from the database,
keeping what it already counts (held, pending). aver, on a partial hash only, is the newest ledger
version the hash has seen applied; a database snapshot older than that is refused.

The scripts, the keys they touch and their parsed replies are in the registry, switchyard/lua.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from accounts.models import Organization
from billing.models import Hold, HoldStatus
from billing.selectors import key_usage_units, limit_period_start
from billing.usage import embedded_writer
from switchyard import ids, lua
from switchyard.db import db_call
from switchyard.errors import InsufficientCredits
from switchyard.fastredis import Script
from switchyard.lua import (
    HOLDS_ZSET,
    USAGE_STREAM,
    InitReply,
    Insufficient,
    KeyLimit,
    KeyNotLoaded,
    OrgNotLoaded,
    Placed,
    RateRefused,
    hold_hash,
    key_hash_name,
    org_hash,
    pending_generation_key,
)
from switchyard.money import from_units
from switchyard.retry import GaveUp, retry
from switchyard.shared import async_redis, redis_enabled, setting, spawn_detached, start_shared, sync_redis

logger = logging.getLogger("switchyard.billing")

T = TypeVar("T")

# The keys and scripts live in the Lua registry (switchyard/lua.py), which documents each script's KEYS,
# ARGV and reply; billing (and its tests) import the key names from here as before.


def limit_period(reset: str, now: float | None = None) -> str:
    """The id of the key-limit window `now` falls in (UTC)."""
    from datetime import UTC, datetime

    moment = datetime.fromtimestamp(now or time.time(), tz=UTC)
    if reset == "daily":
        return "d" + moment.strftime("%Y-%m-%d")
    if reset == "weekly":
        year, week, _ = moment.isocalendar()
        return f"w{year}-{week:02d}"
    if reset == "monthly":
        return "m" + moment.strftime("%Y-%m")
    return "all"


@dataclass(slots=True)
class HoldRef:
    id: str
    org_id: int
    key_id: int | None
    amount_units: int


def new_hold_id() -> str:
    return "hold-" + ids.token_hex(12)


def hold_cap(hold: HoldRef, cost_units: int) -> tuple[int, int]:
    """(charged, uncharged): settlement never charges more than the hold, so no balance can go below
    zero whatever a provider reports. What it reported beyond the hold is the platform's loss, recorded
    on the generation for the auditor (docs/billing.md, "Holds: the upper bound")."""
    charged = min(max(cost_units, 0), hold.amount_units)
    return charged, max(cost_units - charged, 0)


class _Scripts:
    """The registry's scripts by name (switchyard.lua.REGISTRY): over the hot path's pipelined
    connection (`async_`) or redis-py's (`sync`, registered once per client)."""

    def __init__(self) -> None:
        self._sync: dict[str, Any] = {}

    def async_(self, name: str) -> Script:
        return lua.REGISTRY[name].fast

    def sync(self, name: str) -> Any:
        """redis-py's Script for `name`; its reply is raw (parse it with the script's `reply`)."""
        if name not in self._sync:
            self._sync[name] = sync_redis().register_script(lua.REGISTRY[name].source)
        return self._sync[name]

    def run_sync(self, script: lua.Lua[T], keys: list[Any], args: list[Any]) -> T:
        return script.reply(self.sync(script.name)(keys=keys, args=args))

    def reset(self) -> None:
        self._sync.clear()


scripts = _Scripts()


def _org_snapshot(org_id: int) -> tuple[int, int]:
    return Organization.objects.values_list("balance_units", "ledger_version").get(pk=org_id)


async def _redis_init(org_id: int) -> None:
    """Mirror the organisation from the database (complete a partial hash); a snapshot the hash has
    already seen past is read again."""
    for _ in range(3):
        balance, version = await db_call(_org_snapshot, org_id)
        if (
            await lua.INIT(keys=[org_hash(org_id)], args=[str(balance), str(version)])
            != InitReply.STALE_SNAPSHOT
        ):
            return


# ---- embedded mode (database) --------------------------------------------------------------------


def _db_place(
    org_id: int, key_id: int | None, amount: int, limit_units: int | None = None, limit_reset: str = "none"
) -> HoldRef:
    now = timezone.now()
    reserving = Q(status=HoldStatus.OPEN, expires_at__gt=now) | Q(status=HoldStatus.SETTLED)
    sums = {
        "open": Sum("amount_units", filter=Q(status=HoldStatus.OPEN)),
        "settled": Sum("settled_units", filter=Q(status=HoldStatus.SETTLED)),
    }
    with transaction.atomic():
        org = Organization.objects.select_for_update().only("balance_units").get(pk=org_id)
        reserved = Hold.objects.filter(reserving, organization_id=org_id).aggregate(**sums)
        available = org.balance_units - (reserved["open"] or 0) - (reserved["settled"] or 0)
        if amount > available:
            raise _insufficient(available, amount)
        if limit_units is not None and key_id is not None:
            used = key_usage_units(api_key_id=key_id, since=limit_period_start(limit_reset))
            key_reserved = Hold.objects.filter(reserving, api_key_id=key_id).aggregate(**sums)
            key_available = limit_units - used - (key_reserved["open"] or 0) - (key_reserved["settled"] or 0)
            if amount > key_available:
                raise _key_limit(key_available, amount)
        hold = Hold.objects.create(
            id=new_hold_id(),
            organization_id=org_id,
            api_key_id=key_id,
            amount_units=amount,
            expires_at=now + timedelta(seconds=settings.SWITCHYARD_HOLD_TTL_SECONDS),
        )
    return HoldRef(hold.id, org_id, key_id, amount)


def _key_limit(available: int, amount: int) -> InsufficientCredits:
    return InsufficientCredits(
        "This API key's credit limit is reached: this request may cost up to "
        f"${from_units(amount).normalize():f} and ${from_units(max(available, 0)).normalize():f} of the "
        "limit remains. Raise the key's limit or lower max_tokens.",
        code="key_limit_exceeded",
        metadata={
            "required": str(from_units(amount).normalize()),
            "limit_remaining": str(from_units(max(available, 0)).normalize()),
        },
    )


def _key_used_units(key_id: int, reset: str) -> int:
    return key_usage_units(api_key_id=key_id, since=limit_period_start(reset))


def _insufficient(available: int, amount: int) -> InsufficientCredits:
    return InsufficientCredits(
        "Insufficient credits: this request may cost up to "
        f"${from_units(amount).normalize():f} and ${from_units(max(available, 0)).normalize():f} is available. "
        "Add credits or lower max_tokens.",
        metadata={
            "required": str(from_units(amount).normalize()),
            "available": str(from_units(max(available, 0)).normalize()),
        },
    )


# ---- the interface the hot path uses -------------------------------------------------------------


class RateCheck(Protocol):
    """What a hold needs of the request's rate limits (routing.ratelimit.RateGate): the buckets' KEYS and
    ARGV for the rate-checked hold script (switchyard.lua.rate_checked), and what to do with its answer."""

    @property
    def keys(self) -> list[str]: ...

    @property
    def args(self) -> list[str]: ...

    def admitted(self, figures: Sequence[int]) -> None: ...

    def refused(self, bucket: int, retry_us: int) -> Exception: ...


async def hold_place(
    *,
    org_id: int,
    key_id: int | None,
    amount_units: int,
    limit_units: int | None = None,
    limit_reset: str = "none",
    rate: RateCheck | None = None,
) -> HoldRef:
    """Reserve `amount_units` against the organisation (and the key's credit limit) or raise 402.

    `rate` (full mode) checks and takes the request's rate limits in the same Lua call, or raises 429
    placing no hold. Embedded mode ignores it (the gate already did)."""
    if not redis_enabled():
        return await db_call(_db_place, org_id, key_id, amount_units, limit_units, limit_reset)
    hold_id = new_hold_id()
    expires = int(time.time()) + setting("SWITCHYARD_HOLD_TTL_SECONDS")
    period = limit_period(limit_reset) if limit_units is not None and key_id else ""
    place = lua.PLACE if rate is None else lua.PLACE_RATED
    keys = [org_hash(org_id), hold_hash(hold_id), HOLDS_ZSET, key_hash_name(key_id)]
    args = [str(amount_units), str(expires), str(org_id), hold_id, str(key_id or ""), period, _live["token"]]
    if rate is not None:
        keys, args = [*keys, *rate.keys], [*args, *rate.args]
    for _ in range(3):
        try:
            reply = place.reply(await place.fast(keys=keys, args=args))  # no extra coroutine frame
        except (RedisConnectionError, RedisTimeoutError, asyncio.CancelledError):
            _release_later(hold_id)
            raise
        match reply:
            case Placed(rate=figures):
                if rate is not None:
                    rate.admitted(figures)
                return HoldRef(hold_id, org_id, key_id, amount_units)
            case RateRefused(bucket=bucket, retry_us=retry_us) if rate is not None:
                raise rate.refused(bucket, retry_us)
            case OrgNotLoaded():
                await _redis_init(org_id)
            case KeyNotLoaded() if key_id is not None:
                used = await db_call(_key_used_units, key_id, limit_reset)
                await lua.KINIT(keys=[key_hash_name(key_id)], args=[period, str(limit_units), str(used)])
            case KeyLimit(available=available):
                raise _key_limit(available, amount_units)
            case Insufficient(available=available):
                raise _insufficient(available, amount_units)
            case _:
                raise RuntimeError(f"unexpected hold reply {reply!r}")
    raise InsufficientCredits("Could not reserve credit for this request; please retry.")


def _release_later(hold_id: str) -> None:
    """The call placing `hold_id` failed on the connection (or its request was cancelled) after it was
    written: Redis may have placed the hold and only the reply been lost, which would keep the credit
    reserved until the reaper's TTL. Release it by id once Redis answers; REAP does nothing for a
    hold that was never placed. Retried like a settlement (switchyard.retry)."""
    spawn_detached(_release(hold_id))


async def _release(hold_id: str) -> None:
    async def reap() -> bool:
        return await lua.REAP(keys=[hold_hash(hold_id), HOLDS_ZSET], args=[hold_id])

    try:
        await retry(
            reap, what=f"release of {hold_id}", retry_on=(RedisConnectionError, RedisTimeoutError), log=logger
        )
    except GaveUp:
        logger.error("could not release %s; the reaper will when it expires", hold_id)


def key_limit_changed(key_id: int, limit_units: int | None) -> None:
    """After a key's limit is edited: move the mirror by the difference, or drop it."""
    if not redis_enabled():
        return
    if limit_units is None:
        sync_redis().delete(key_hash_name(key_id))
    else:
        scripts.run_sync(lua.KLIMIT, keys=[key_hash_name(key_id)], args=[str(limit_units)])


async def hold_settle(
    hold: HoldRef,
    *,
    cost_units: int,
    event: bytes,
    outcomes: list[Any] | None = None,
    generation_id: str | None = None,
) -> None:
    """Turn the hold into the exact cost and hand the usage event on, in one step.

    Full mode: one Lua call (the second and last Redis round trip of a request). Embedded mode: the
    in-process usage writer settles the hold in the same transaction as the ledger entry.
    """
    if not redis_enabled():
        _settle_embedded(event, outcomes, generation_id)
        return
    await lua.SETTLE(*_settle_call(hold, cost_units, event, outcomes, generation_id))


def hold_settle_now(
    hold: HoldRef,
    *,
    cost_units: int,
    event: bytes,
    outcomes: list[Any] | None = None,
    generation_id: str | None = None,
) -> Awaitable[Any] | None:
    """`hold_settle`, handed over before this returns: in full mode the Lua call is written to Redis's
    socket (await the result for its reply), in embedded mode the event is queued (the result is
    already done). None, having done nothing, when Redis has no live connection: await `hold_settle`."""
    if not redis_enabled():
        _settle_embedded(event, outcomes, generation_id)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done
    return lua.SETTLE.fast.issue(*_settle_call(hold, cost_units, event, outcomes, generation_id))


class SettleHealth(Protocol):
    """What a settlement records beside its charge, in the same call: the attempts' endpoint-health
    outcomes (routing.health.book, registered by RoutingConfig.ready, so billing imports no routing)."""

    def settle_args(self, outcomes: list[Any]) -> list[str]:
        """Full mode: the outcomes as SETTLE's health records (switchyard.lua.HEALTH_FUNCTIONS)."""
        ...

    def record_local(self, outcomes: list[Any]) -> None:
        """Embedded mode: record them in process."""
        ...


class _NoHealth:
    def settle_args(self, outcomes: list[Any]) -> list[str]:
        return []

    def record_local(self, outcomes: list[Any]) -> None:
        return None


_health: SettleHealth = _NoHealth()


def settle_health_register(recorder: SettleHealth) -> None:
    """Settlements record their outcomes with `recorder` from now on (once, at start-up)."""
    global _health
    _health = recorder


def _settle_embedded(event: bytes, outcomes: list[Any] | None, generation_id: str | None) -> None:
    _health.record_local(outcomes or [])
    embedded_writer().put(event, generation_id)


def _settle_call(
    hold: HoldRef, cost_units: int, event: bytes, outcomes: list[Any] | None, generation_id: str | None
) -> tuple[list[Any], list[Any]]:
    """switchyard.lua.SETTLE's keys and arguments."""
    keys = [
        org_hash(hold.org_id),
        hold_hash(hold.id),
        HOLDS_ZSET,
        USAGE_STREAM,
        key_hash_name(hold.key_id),
        *([pending_generation_key(generation_id)] if generation_id else []),
    ]
    args = [
        str(cost_units),
        str(hold.amount_units - cost_units),
        event,
        hold.id,
        *_health.settle_args(outcomes or []),
    ]
    return keys, args


def pending_generation_event(generation_id: str) -> dict[str, Any] | None:
    """The settled usage event of a generation the drain has not written yet, if any."""
    if not redis_enabled():
        raw = embedded_writer().pending.get(generation_id)
    else:
        raw = sync_redis().get(pending_generation_key(generation_id))
    return orjson.loads(raw) if raw else None


def redis_balance_sync(org_id: int, amount_units: int, version: int) -> None:
    """Called after a non-usage ledger entry commits (see billing.services.mirror_balance)."""
    scripts.run_sync(lua.CREDIT, keys=[org_hash(org_id)], args=[str(amount_units), str(version)])


def redis_usage_applied(
    org_id: int, entries: list[tuple[str, int, int | None]], *, version: int | None = None
) -> int:
    """Entries are (stream id, cost, key id) whose ledger rows have committed; `version` is the
    organisation's ledger version once they had (None: unknown, the mirror is assumed older)."""
    if not entries:
        return 0
    args: list[str] = ["" if version is None else str(version)]
    for stream_id, cost, key_id in entries:
        args += [stream_id, str(cost), str(key_id or "")]
    return scripts.run_sync(lua.APPLY, keys=[org_hash(org_id), USAGE_STREAM], args=args)


# ---- holds of a process that died ---------------------------------------------------------------
# A web process keeps a liveness key (sy:live:<token>, LIVE_TTL_SECONDS) and names it in every hold
# it places; the reaper releases the holds of a process whose key expired (it died) once they are
# DEAD_GRACE_SECONDS old, instead of waiting out SWITCHYARD_HOLD_TTL_SECONDS. A live process that
# could not reach Redis for longer than the key lives may see its holds released early: its requests
# still settle to their exact cost (SETTLE charges a hold already released), only the reservation
# ends sooner.
LIVE_PREFIX = "sy:live:"
LIVE_TTL_SECONDS = 15
LIVE_EVERY_SECONDS = 5.0
DEAD_GRACE_SECONDS = 30
_live = {"token": ""}  # set once this process's liveness key exists
_live_task: asyncio.Task[None] | None = None


def liveness_start() -> None:
    """Keep this web process's liveness key (full mode; once per process and event loop)."""
    global _live_task
    if redis_enabled() and (
        _live_task is None or _live_task.done() or _live_task.get_loop() is not asyncio.get_running_loop()
    ):
        _live_task = start_shared(_liveness_keep(f"{socket.gethostname()}.{os.getpid()}.{ids.token_hex(4)}"))


async def _liveness_keep(token: str) -> None:
    while True:
        try:
            await async_redis().set(LIVE_PREFIX + token, "1", ex=LIVE_TTL_SECONDS)
            _live["token"] = token
            await asyncio.sleep(LIVE_EVERY_SECONDS)
        except Exception:
            logger.debug("could not renew this process's liveness key", exc_info=True)
            await asyncio.sleep(1.0)  # renewed within a second of Redis returning


def _holds_of_dead_processes(client: Any, now: float) -> list[str]:
    """Open holds at least DEAD_GRACE_SECONDS old whose placing process's liveness key is gone."""
    placed_before = now - DEAD_GRACE_SECONDS + setting("SWITCHYARD_HOLD_TTL_SECONDS")
    candidates = [
        raw.decode() if isinstance(raw, bytes) else raw
        for raw in client.zrangebyscore(HOLDS_ZSET, "-inf", placed_before, start=0, num=10_000)
    ]
    if not candidates:
        return []
    pipe = client.pipeline(transaction=False)
    for hold_id in candidates:
        pipe.hget(hold_hash(hold_id), "p")
    owners = [
        (h, (p.decode() if isinstance(p, bytes) else p) or "")
        for h, p in zip(candidates, pipe.execute(), strict=True)
    ]
    tokens = sorted({p for _, p in owners if p})
    if not tokens:
        return []
    pipe = client.pipeline(transaction=False)
    for token in tokens:
        pipe.exists(LIVE_PREFIX + token)
    dead = {t for t, alive in zip(tokens, pipe.execute(), strict=True) if not alive}
    return [h for h, p in owners if p in dead]


def holds_reap_expired(now: float | None = None) -> int:
    """Release holds whose request died with its worker (full mode; embedded holds just expire in SQL)."""
    if not redis_enabled():
        return Hold.objects.filter(status=HoldStatus.OPEN, expires_at__lte=timezone.now()).update(
            status=HoldStatus.EXPIRED
        )
    client = sync_redis()
    now = now or time.time()
    due = [
        raw.decode() if isinstance(raw, bytes) else raw
        for raw in client.zrangebyscore(HOLDS_ZSET, "-inf", now, start=0, num=1000)
    ]
    orphaned = _holds_of_dead_processes(client, now)
    released = 0
    for hold_id in dict.fromkeys([*due, *orphaned]):
        released += scripts.run_sync(lua.REAP, keys=[hold_hash(hold_id), HOLDS_ZSET], args=[hold_id])
    if orphaned:
        logger.warning("released %d holds of web processes that died", len(orphaned))
    return released
