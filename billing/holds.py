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
organisation): the hold path treats it as not mirrored and INIT_LUA completes it from the database,
keeping what it already counts (held, pending). aver, on a partial hash only, is the newest ledger
version the hash has seen applied; a database snapshot older than that is refused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from routing.health import HEALTH_LUA, Outcome, book
from switchyard import ids
from switchyard.db import db_call
from switchyard.errors import InsufficientCredits
from switchyard.fastredis import Script, script
from switchyard.retry import GaveUp, retry
from switchyard.shared import async_redis, redis_enabled, setting, spawn_detached, start_shared, sync_redis

logger = logging.getLogger("switchyard.billing")

USAGE_STREAM = "sy:usage"
HOLDS_ZSET = "sy:holds"


def org_hash(org_id: int) -> str:
    return f"sy:o:{org_id}"


def hold_hash(hold_id: str) -> str:
    return f"sy:h:{hold_id}"


NEG = (
    "local function neg(s) if s == '0' then return '0' end "
    "if string.sub(s, 1, 1) == '-' then return string.sub(s, 2) end return '-' .. s end\n"
)

# Place a hold. KEYS: org hash, hold hash, holds zset, key hash. ARGV: amount, expiry, org id, hold
# id, key id, limit period ('' when the key has no credit limit), the placing process's liveness
# token ('' or absent when it keeps none).
# Returns {1, org avail after}; {0, org avail} org short; {-3, key avail} key limit short;
# {-1} org not mirrored yet; {-2} key limit not mirrored for this period yet.
PLACE_LUA = (
    NEG
    + """
if redis.call('HEXISTS', KEYS[1], 'initver') == 0 then return {-1, '0'} end
local limited = ARGV[6] ~= ''
if limited and redis.call('HGET', KEYS[4], 'period') ~= ARGV[6] then return {-2, '0'} end
local after = redis.call('HINCRBY', KEYS[1], 'avail', neg(ARGV[1]))
if after < 0 then
  redis.call('HINCRBY', KEYS[1], 'avail', ARGV[1])
  return {0, redis.call('HGET', KEYS[1], 'avail')}
end
if limited then
  local kafter = redis.call('HINCRBY', KEYS[4], 'avail', neg(ARGV[1]))
  if kafter < 0 then
    redis.call('HINCRBY', KEYS[4], 'avail', ARGV[1])
    redis.call('HINCRBY', KEYS[1], 'avail', ARGV[1])
    return {-3, redis.call('HGET', KEYS[4], 'avail')}
  end
  redis.call('HINCRBY', KEYS[4], 'held', ARGV[1])
end
redis.call('HINCRBY', KEYS[1], 'held', ARGV[1])
redis.call('HSET', KEYS[2], 'org', ARGV[3], 'amount', ARGV[1], 'exp', ARGV[2], 'key', ARGV[5],
           'lim', limited and '1' or '0', 'p', ARGV[7] or '')
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
return {1, tostring(after)}
"""
)

# Settle (or release, with cost 0): the hold's reservation becomes the exact cost, pending until the
# ledger has it, and the usage event is queued in the same step. KEYS: org hash, hold hash, holds
# zset, usage stream, key hash, and optionally the pending-generation key (a short-lived copy of the
# event, so GET /generation answers before the drain has written the row). ARGV: cost, amount - cost,
# event, hold id, then health records. A hold the reaper already expired still charges its cost.
# A retried settlement (its first reply lost to a Redis blip) finds the pending-generation key and does
# nothing, so it never charges twice.
SETTLE_LUA = (
    NEG
    + HEALTH_LUA
    + """
if KEYS[6] and redis.call('EXISTS', KEYS[6]) == 1 then return 0 end
local amount = redis.call('HGET', KEYS[2], 'amount')
if amount then
  local lim = redis.call('HGET', KEYS[2], 'lim')
  redis.call('HINCRBY', KEYS[1], 'held', neg(amount))
  redis.call('HINCRBY', KEYS[1], 'avail', ARGV[2])
  if lim == '1' then
    redis.call('HINCRBY', KEYS[5], 'held', neg(amount))
    redis.call('HINCRBY', KEYS[5], 'avail', ARGV[2])
    redis.call('HINCRBY', KEYS[5], 'pending', ARGV[1])
  end
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[3], ARGV[4])
else
  redis.call('HINCRBY', KEYS[1], 'avail', neg(ARGV[1]))
  if redis.call('EXISTS', KEYS[5]) == 1 then
    redis.call('HINCRBY', KEYS[5], 'avail', neg(ARGV[1]))
    redis.call('HINCRBY', KEYS[5], 'pending', ARGV[1])
  end
end
redis.call('HINCRBY', KEYS[1], 'pending', ARGV[1])
local id = redis.call('XADD', KEYS[4], '*', 'e', ARGV[3])
if KEYS[6] then redis.call('SET', KEYS[6], ARGV[3], 'EX', 300) end
record_health(5)
return id
"""
)

# After the ledger rows for some usage events commit: each stream entry deleted here (exactly once)
# moves its cost out of pending (and into the key's used). The mirrored balance drops by it too,
# unless the mirror was loaded from a database that already had these rows (initver >= the ledger
# version their write left, ARGV[1]; '' for unknown: always). KEYS: org hash, stream. ARGV: that
# version, then triples of (stream id, cost, key id or '').
APPLY_LUA = (
    NEG
    + """
local initver = redis.call('HGET', KEYS[1], 'initver')
local ver = tonumber(ARGV[1])
local loaded_before = ver == nil or (initver and tonumber(initver) < ver)
local done = 0
for i = 2, #ARGV, 3 do
  if redis.call('XDEL', KEYS[2], ARGV[i]) == 1 then
    local cost = ARGV[i + 1]
    redis.call('HINCRBY', KEYS[1], 'pending', neg(cost))
    if loaded_before then
      redis.call('HINCRBY', KEYS[1], 'bal', neg(cost))
    elseif initver then
      redis.call('HINCRBY', KEYS[1], 'avail', cost)
    end
    if ARGV[i + 2] ~= '' then
      local k = 'sy:k:' .. ARGV[i + 2]
      if redis.call('EXISTS', k) == 1 then
        redis.call('HINCRBY', k, 'pending', neg(cost))
        redis.call('HINCRBY', k, 'used', cost)
      end
    end
    done = done + 1
  end
end
if done > 0 and not initver and ver then
  local aver = tonumber(redis.call('HGET', KEYS[1], 'aver') or '0')
  if ver > aver then redis.call('HSET', KEYS[1], 'aver', ARGV[1]) end
end
return done
"""
)

# Mirror an organisation from the database once (no-op when already mirrored). A partial hash keeps
# the holds and pending costs it counts; a snapshot older than a version it has seen applied is
# refused (-1: read the database again). ARGV: balance, version.
INIT_LUA = (
    NEG
    + """
if redis.call('HEXISTS', KEYS[1], 'initver') == 1 then return 0 end
local seen = tonumber(redis.call('HGET', KEYS[1], 'aver') or '0')
if seen > tonumber(ARGV[2]) then return -1 end
local held = redis.call('HGET', KEYS[1], 'held') or '0'
local pending = redis.call('HGET', KEYS[1], 'pending') or '0'
redis.call('HSET', KEYS[1], 'bal', ARGV[1], 'avail', ARGV[1], 'held', held, 'pending', pending,
           'initver', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'avail', neg(held))
redis.call('HINCRBY', KEYS[1], 'avail', neg(pending))
redis.call('HDEL', KEYS[1], 'aver')
return 1
"""
)

# Mirror a key's credit limit for a period. In-flight holds and pending costs carry over. ARGV:
# period, limit, usage already in the ledger for the period.
KINIT_LUA = (
    NEG
    + """
if redis.call('HGET', KEYS[1], 'period') == ARGV[1] then return 0 end
local held = redis.call('HGET', KEYS[1], 'held') or '0'
local pending = redis.call('HGET', KEYS[1], 'pending') or '0'
redis.call('HSET', KEYS[1], 'period', ARGV[1], 'limit', ARGV[2], 'used', ARGV[3], 'avail', ARGV[2],
           'held', held, 'pending', pending)
redis.call('HINCRBY', KEYS[1], 'avail', neg(ARGV[3]))
redis.call('HINCRBY', KEYS[1], 'avail', neg(held))
redis.call('HINCRBY', KEYS[1], 'avail', neg(pending))
return 1
"""
)

# A key's limit changed: move its available amount by the difference. ARGV: new limit.
KLIMIT_LUA = (
    NEG
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local old = redis.call('HGET', KEYS[1], 'limit') or '0'
redis.call('HINCRBY', KEYS[1], 'avail', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'avail', neg(old))
redis.call('HSET', KEYS[1], 'limit', ARGV[1])
return 1
"""
)

# A committed non-usage ledger entry (grant, purchase, refund): add its amount unless the mirror was
# initialised from a balance that already included it. A partial hash only remembers the version, so
# the snapshot that completes it includes the entry. ARGV: amount, ledger version after the entry.
CREDIT_LUA = """
local initver = redis.call('HGET', KEYS[1], 'initver')
if not initver then
  if redis.call('EXISTS', KEYS[1]) == 1 and tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], 'aver') or '0') then
    redis.call('HSET', KEYS[1], 'aver', ARGV[2])
  end
  return 0
end
if tonumber(initver) >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'bal', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'avail', ARGV[1])
return 1
"""

# Release one expired hold (the worker that placed it died). ARGV: hold id.
REAP_LUA = (
    NEG
    + """
local org = redis.call('HGET', KEYS[1], 'org')
local amount = redis.call('HGET', KEYS[1], 'amount')
redis.call('ZREM', KEYS[2], ARGV[1])
if not amount then return 0 end
local okey = 'sy:o:' .. org
redis.call('HINCRBY', okey, 'held', neg(amount))
redis.call('HINCRBY', okey, 'avail', amount)
if redis.call('HGET', KEYS[1], 'lim') == '1' then
  local kkey = 'sy:k:' .. redis.call('HGET', KEYS[1], 'key')
  redis.call('HINCRBY', kkey, 'held', neg(amount))
  redis.call('HINCRBY', kkey, 'avail', amount)
end
redis.call('DEL', KEYS[1])
return 1
"""
)


def key_hash_name(key_id: int | None) -> str:
    return f"sy:k:{key_id or 0}"


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
    def __init__(self) -> None:
        self._sync: dict[str, Any] = {}

    def async_(self, name: str) -> Script:
        """The hot path's scripts run over the lean pipelined connection (switchyard/fastredis.py)."""
        return script(globals()[name])

    def sync(self, name: str) -> Any:
        if name not in self._sync:
            self._sync[name] = sync_redis().register_script(globals()[name])
        return self._sync[name]

    def reset(self) -> None:
        self._sync.clear()


scripts = _Scripts()


def _org_snapshot(org_id: int) -> tuple[int, int]:
    from accounts.models import Organization

    return Organization.objects.values_list("balance_units", "ledger_version").get(pk=org_id)


async def _redis_init(org_id: int) -> None:
    """Mirror the organisation from the database (complete a partial hash); a snapshot the hash has
    already seen past is read again."""
    for _ in range(3):
        balance, version = await db_call(_org_snapshot, org_id)
        done = await scripts.async_("INIT_LUA")(keys=[org_hash(org_id)], args=[str(balance), str(version)])
        if int(done) >= 0:
            return


# ---- embedded mode (database) --------------------------------------------------------------------


def _db_place(
    org_id: int, key_id: int | None, amount: int, limit_units: int | None = None, limit_reset: str = "none"
) -> HoldRef:
    from accounts.models import Organization
    from billing.models import Hold, HoldStatus
    from billing.selectors import key_usage_units, limit_period_start

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
    from billing.money import from_units

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
    from billing.selectors import key_usage_units, limit_period_start

    return key_usage_units(api_key_id=key_id, since=limit_period_start(reset))


def _insufficient(available: int, amount: int) -> InsufficientCredits:
    from billing.money import from_units

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


async def hold_place(
    *,
    org_id: int,
    key_id: int | None,
    amount_units: int,
    limit_units: int | None = None,
    limit_reset: str = "none",
    rate: Any = None,
) -> HoldRef:
    """Reserve `amount_units` against the organisation (and the key's credit limit) or raise 402.

    `rate` (a routing.ratelimit.RateGate; full mode) checks and takes the request's rate limits in the
    same Lua call, or raises 429 placing no hold. Embedded mode ignores it (the gate already did)."""
    if not redis_enabled():
        return await db_call(_db_place, org_id, key_id, amount_units, limit_units, limit_reset)
    hold_id = new_hold_id()
    expires = int(time.time()) + setting("SWITCHYARD_HOLD_TTL_SECONDS")
    period = limit_period(limit_reset) if limit_units is not None and key_id else ""
    place = scripts.async_("PLACE_LUA") if rate is None else rate.script(PLACE_LUA)
    keys = [org_hash(org_id), hold_hash(hold_id), HOLDS_ZSET, key_hash_name(key_id)]
    args = [str(amount_units), str(expires), str(org_id), hold_id, str(key_id or ""), period, _live["token"]]
    if rate is not None:
        keys, args = [*keys, *rate.keys], [*args, *rate.args]
    for _ in range(3):
        try:
            result = await place(keys=keys, args=args)
        except (RedisConnectionError, RedisTimeoutError, asyncio.CancelledError):
            _release_later(hold_id)
            raise
        status = int(result[0])
        if status == 1:
            if rate is not None:
                rate.admitted(result[2:])
            return HoldRef(hold_id, org_id, key_id, amount_units)
        if status == -9:
            raise rate.refused(result[1], result[2])
        if status == -1:
            await _redis_init(org_id)
        elif status == -2 and key_id is not None:
            used = await db_call(_key_used_units, key_id, limit_reset)
            await scripts.async_("KINIT_LUA")(
                keys=[key_hash_name(key_id)], args=[period, str(limit_units), str(used)]
            )
        elif status == -3:
            raise _key_limit(int(result[1]), amount_units)
        else:
            raise _insufficient(int(result[1]), amount_units)
    raise InsufficientCredits("Could not reserve credit for this request; please retry.")


def _release_later(hold_id: str) -> None:
    """The call placing `hold_id` failed on the connection (or its request was cancelled) after it was
    written: Redis may have placed the hold and only the reply been lost, which would keep the credit
    reserved until the reaper's TTL. Release it by id once Redis answers; REAP_LUA does nothing for a
    hold that was never placed. Retried like a settlement (switchyard.retry)."""
    spawn_detached(_release(hold_id))


async def _release(hold_id: str) -> None:
    async def reap() -> Any:
        return await scripts.async_("REAP_LUA")(keys=[hold_hash(hold_id), HOLDS_ZSET], args=[hold_id])

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
        scripts.sync("KLIMIT_LUA")(keys=[key_hash_name(key_id)], args=[str(limit_units)])


async def hold_settle(
    hold: HoldRef,
    *,
    cost_units: int,
    event: bytes,
    outcomes: list[Outcome] | None = None,
    generation_id: str | None = None,
) -> None:
    """Turn the hold into the exact cost and hand the usage event on, in one step.

    Full mode: one Lua call (the second and last Redis round trip of a request). Embedded mode: the
    in-process usage writer settles the hold in the same transaction as the ledger entry.
    """
    if not redis_enabled():
        _settle_embedded(event, outcomes, generation_id)
        return
    await scripts.async_("SETTLE_LUA")(*_settle_call(hold, cost_units, event, outcomes, generation_id))


def hold_settle_now(
    hold: HoldRef,
    *,
    cost_units: int,
    event: bytes,
    outcomes: list[Outcome] | None = None,
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
    return scripts.async_("SETTLE_LUA").issue(*_settle_call(hold, cost_units, event, outcomes, generation_id))


def _settle_embedded(event: bytes, outcomes: list[Outcome] | None, generation_id: str | None) -> None:
    from billing.usage import embedded_writer

    book.record_local(outcomes or [])
    embedded_writer().put(event, generation_id)


def _settle_call(
    hold: HoldRef, cost_units: int, event: bytes, outcomes: list[Outcome] | None, generation_id: str | None
) -> tuple[list[Any], list[Any]]:
    """SETTLE_LUA's keys and arguments."""
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
        *book.settle_args(outcomes or []),
    ]
    return keys, args


def pending_generation_key(generation_id: str) -> str:
    return f"sy:gen:{generation_id}"


def pending_generation_event(generation_id: str) -> dict[str, Any] | None:
    """The settled usage event of a generation the drain has not written yet, if any."""
    if not redis_enabled():
        from billing.usage import embedded_writer

        raw = embedded_writer().pending.get(generation_id)
    else:
        raw = sync_redis().get(pending_generation_key(generation_id))
    return orjson.loads(raw) if raw else None


def redis_balance_sync(org_id: int, amount_units: int, version: int) -> None:
    """Called after a non-usage ledger entry commits (see billing.services.mirror_balance)."""
    scripts.sync("CREDIT_LUA")(keys=[org_hash(org_id)], args=[str(amount_units), str(version)])


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
    return int(scripts.sync("APPLY_LUA")(keys=[org_hash(org_id), USAGE_STREAM], args=args))


# ---- holds of a process that died ---------------------------------------------------------------
# A web process keeps a liveness key (sy:live:<token>, LIVE_TTL_SECONDS) and names it in every hold
# it places; the reaper releases the holds of a process whose key expired (it died) once they are
# DEAD_GRACE_SECONDS old, instead of waiting out SWITCHYARD_HOLD_TTL_SECONDS. A live process that
# could not reach Redis for longer than the key lives may see its holds released early: its requests
# still settle to their exact cost (SETTLE_LUA charges a hold already released), only the reservation
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
        from billing.models import Hold, HoldStatus

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
    reap = scripts.sync("REAP_LUA")
    released = 0
    for hold_id in dict.fromkeys([*due, *orphaned]):
        released += int(reap(keys=[hold_hash(hold_id), HOLDS_ZSET], args=[hold_id]))
    if orphaned:
        logger.warning("released %d holds of web processes that died", len(orphaned))
    return released
