"""Every Lua script the hot path and the billing jobs run in Redis, in one registry: each script's source,
the KEYS and ARGV it takes, the keys it touches, and its reply parsed into a named outcome.

The scripts of several apps run as one call (the hold checks the rate limits; the settlement records
endpoint health), because each extra call is an extra Redis round trip per request. They are put
together here and only here (`rate_checked`, `SETTLE`), from parts each defined once, so no app splices
another's Lua text. Callers run them with EVALSHA (switchyard.fastredis on the hot path, redis-py's
register_script elsewhere) and read replies through the parsers below, never as bare numbers.

Lua numbers are doubles, so the billing scripts never do arithmetic on amounts: they move them with
HINCRBY (Redis's exact int64) and decide on the sign of its result (billing/holds.py).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from string import Template
from typing import Any, Generic, TypeVar

from switchyard.fastredis import Script

T = TypeVar("T")

# ---- the keys ------------------------------------------------------------------------------------
# Billing (picodollars): sy:o:<org> the organisation's mirror (bal, held, pending, avail, initver, aver);
# sy:h:<hold> one open hold (org, amount, exp, key, lim, p = the placing process's liveness token);
# sy:holds the open holds by expiry; sy:k:<key> a key's credit-limit mirror (period, limit, used,
# held, pending, avail); sy:usage the usage stream; sy:gen:<generation> a settled event until drained.
ORG_PREFIX = "sy:o:"
HOLD_PREFIX = "sy:h:"
KEY_PREFIX = "sy:k:"
HOLDS_ZSET = "sy:holds"
USAGE_STREAM = "sy:usage"
GENERATION_PREFIX = "sy:gen:"
# Endpoint health (routing/health.py): sy:hm:<ep>:<minute> minute buckets, sy:cb the breaker and the
# 30-second window, sy:hp moving averages, sy:st:<hash> sticky routing. Rate limits: sy:rl:* buckets,
# named by routing/ratelimit.py and passed as KEYS.
HEALTH_MINUTE_PREFIX = "sy:hm:"
BREAKER_KEY = "sy:cb"
PERF_KEY = "sy:hp"
STICKY_PREFIX = "sy:st:"


def org_hash(org_id: int) -> str:
    return f"{ORG_PREFIX}{org_id}"


def hold_hash(hold_id: str) -> str:
    return f"{HOLD_PREFIX}{hold_id}"


def key_hash_name(key_id: int | None) -> str:
    return f"{KEY_PREFIX}{key_id or 0}"


def pending_generation_key(generation_id: str) -> str:
    return f"{GENERATION_PREFIX}{generation_id}"


# Health parameters the settle script needs (routing/health.py reads the same ones).
WINDOW_MINUTES = 30
RECENT_SLOT_SECONDS = 10
EWMA_ALPHA = 0.2
RECORD_FIELDS = 8


# ---- the outcomes --------------------------------------------------------------------------------


class PlaceCode(enum.IntEnum):
    """The first element of a hold's reply. The Lua is written with these names ($PLACED...)."""

    PLACED = 1
    INSUFFICIENT = 0
    ORG_NOT_LOADED = -1
    KEY_NOT_LOADED = -2
    KEY_LIMIT = -3
    RATE_REFUSED = -9


@dataclass(frozen=True, slots=True)
class Placed:
    available: int  # the organisation's avail after the hold
    rate: tuple[int, ...] = ()  # rate-checked: (requests left, µs until full again) per bucket


@dataclass(frozen=True, slots=True)
class Insufficient:
    available: int  # the organisation's avail, short of the amount


@dataclass(frozen=True, slots=True)
class KeyLimit:
    available: int  # what the key's credit limit has left, short of the amount


@dataclass(frozen=True, slots=True)
class OrgNotLoaded:
    """The organisation is not mirrored (or only partly): load it from the database and try again."""


@dataclass(frozen=True, slots=True)
class KeyNotLoaded:
    """The key's limit is not mirrored for this period: load it and try again."""


@dataclass(frozen=True, slots=True)
class RateRefused:
    bucket: int  # 1-based index of the first refusing bucket in the gate's list
    retry_us: int
    limit: int


PlaceReply = Placed | Insufficient | KeyLimit | OrgNotLoaded | KeyNotLoaded | RateRefused


def _amount(value: Any) -> int:
    """An amount a script returned: an integer reply, or Lua's text of a number, which is written in
    exponent form at 1e15 and above (e.g. b"1.9999999642e+15" for a $2,000 balance in picodollars)."""
    if isinstance(value, int):
        return value
    text = value.decode() if isinstance(value, bytes) else str(value)
    try:
        return int(text)
    except ValueError:
        return int(Decimal(text))


def place_reply(raw: Sequence[Any]) -> PlaceReply:
    """A PLACE (or rate-checked PLACE) reply as its outcome."""
    code = int(raw[0])
    if code == PlaceCode.PLACED:
        return Placed(_amount(raw[1]), tuple(int(x) for x in raw[2:]))
    if code == PlaceCode.INSUFFICIENT:
        return Insufficient(_amount(raw[1]))
    if code == PlaceCode.KEY_LIMIT:
        return KeyLimit(_amount(raw[1]))
    if code == PlaceCode.ORG_NOT_LOADED:
        return OrgNotLoaded()
    if code == PlaceCode.KEY_NOT_LOADED:
        return KeyNotLoaded()
    if code == PlaceCode.RATE_REFUSED:
        return RateRefused(int(raw[1]), int(raw[2]), int(raw[3]))
    raise ValueError(f"unknown hold reply {raw!r}")


class InitReply(enum.IntEnum):
    LOADED = 1
    ALREADY_LOADED = 0
    STALE_SNAPSHOT = -1  # the hash has seen a newer ledger version applied: read the database again


@dataclass(frozen=True, slots=True)
class Settled:
    stream_id: str  # the usage event's id in sy:usage


@dataclass(frozen=True, slots=True)
class AlreadySettled:
    """A retried settlement whose first call had gone through (the pending-generation key exists)."""


SettleReply = Settled | AlreadySettled


def settle_reply(raw: Any) -> SettleReply:
    if raw == 0:
        return AlreadySettled()
    return Settled(raw.decode() if isinstance(raw, bytes) else str(raw))


def _count(raw: Any) -> int:
    return int(raw)


def _changed(raw: Any) -> bool:
    return int(raw) == 1


# ---- the registry --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lua(Generic[T]):
    """One script: its KEYS and ARGV (documentation beside the source), and its reply's parser."""

    name: str
    keys: tuple[str, ...]
    argv: str
    source: str
    reply: Callable[[Any], T]
    fast: Script = field(init=False, repr=False, compare=False)  # EVALSHA over switchyard.fastredis

    def __post_init__(self) -> None:
        object.__setattr__(self, "fast", Script(self.source))

    async def __call__(self, keys: list[Any], args: list[Any]) -> T:
        """Run over the process's pipelined connection; the parsed reply."""
        return self.reply(await self.fast(keys=keys, args=args))


def _lua(*parts: str, **names: object) -> str:
    """Join Lua parts, filling $NAMES (the outcome codes, key prefixes) so Python and Lua agree."""
    return Template("".join(parts)).substitute({c.name: c.value for c in PlaceCode} | names)


NEG = (
    "local function neg(s) if s == '0' then return '0' end "
    "if string.sub(s, 1, 1) == '-' then return string.sub(s, 2) end return '-' .. s end\n"
)

PLACE: Lua[PlaceReply] = Lua(
    "PLACE_LUA",
    keys=("org hash", "hold hash", HOLDS_ZSET, "key hash"),
    argv="amount, expiry (unix s), org id, hold id, key id, limit period ('' when the key has no credit "
    "limit), the placing process's liveness token ('' when it keeps none)",
    source=_lua(
        NEG,
        """
if redis.call('HEXISTS', KEYS[1], 'initver') == 0 then return {$ORG_NOT_LOADED, '0'} end
local limited = ARGV[6] ~= ''
if limited and redis.call('HGET', KEYS[4], 'period') ~= ARGV[6] then return {$KEY_NOT_LOADED, '0'} end
local after = redis.call('HINCRBY', KEYS[1], 'avail', neg(ARGV[1]))
if after < 0 then
  redis.call('HINCRBY', KEYS[1], 'avail', ARGV[1])
  return {$INSUFFICIENT, redis.call('HGET', KEYS[1], 'avail')}
end
if limited then
  local kafter = redis.call('HINCRBY', KEYS[4], 'avail', neg(ARGV[1]))
  if kafter < 0 then
    redis.call('HINCRBY', KEYS[4], 'avail', ARGV[1])
    redis.call('HINCRBY', KEYS[1], 'avail', ARGV[1])
    return {$KEY_LIMIT, redis.call('HGET', KEYS[4], 'avail')}
  end
  redis.call('HINCRBY', KEYS[4], 'held', ARGV[1])
end
redis.call('HINCRBY', KEYS[1], 'held', ARGV[1])
redis.call('HSET', KEYS[2], 'org', ARGV[3], 'amount', ARGV[1], 'exp', ARGV[2], 'key', ARGV[5],
           'lim', limited and '1' or '0', 'p', ARGV[7] or '')
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
return {$PLACED, tostring(after)}
""",
    ),
    reply=place_reply,
)

# Rate limits (routing/ratelimit.py). Entry kinds: 'g' = GCRA bucket (limit, period in µs, cost), 'w' =
# a counter for a fixed window (limit, window end in µs since the epoch, cost). Cost 0 means "needs
# capacity for one, takes nothing" (the tokens-per-minute admission check). The buckets are the last n
# KEYS; their ARGV (4 each: kind, limit, period or window end, cost) come just before the last ARGV,
# which is n, so they can follow another script's own KEYS and ARGV (`rate_checked`). rl_check takes
# nothing; it returns {index, retry µs, limit} of the first bucket that refuses, or nil and, per
# bucket, the requests left and µs until full again (or until the window ends), plus the writes
# rl_commit makes. Times come from Redis's clock, shared by every web process. Numbers stay far below
# 2^53 (µs since the epoch ~1.8e15), so Lua's doubles are exact enough; they are stored with %.0f
# because tostring() would round them to 14 digits.
RATE_FUNCTIONS = """
local function rl_check()
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local n = tonumber(ARGV[#ARGV])
  local k0 = #KEYS - n
  local a0 = #ARGV - 1 - 4 * n
  local out = {}
  local writes = {}
  for i = 1, n do
    local key = KEYS[k0 + i]
    local kind = ARGV[a0 + 4 * i - 3]
    local limit = tonumber(ARGV[a0 + 4 * i - 2])
    local span = tonumber(ARGV[a0 + 4 * i - 1])
    local cost = tonumber(ARGV[a0 + 4 * i])
    local need = cost
    if need < 1 then need = 1 end
    if kind == 'g' then
      local interval = span / limit
      local tat = tonumber(redis.call('GET', key) or '0')
      if tat < now then tat = now end
      local allow_at = tat + need * interval - span
      if allow_at > now then return {i, math.ceil(allow_at - now), limit} end
      local new_tat = tat + cost * interval
      out[#out + 1] = math.floor((span - (new_tat - now)) / interval)
      out[#out + 1] = math.ceil(new_tat - now)
      if cost > 0 then
        writes[#writes + 1] = {key, 'g', string.format('%.0f', new_tat), math.ceil((new_tat - now) / 1000) + 1000}
      end
    else
      local count = tonumber(redis.call('GET', key) or '0')
      if count + need > limit then return {i, math.ceil(span - now), limit} end
      out[#out + 1] = limit - count - cost
      out[#out + 1] = math.ceil(span - now)
      if cost > 0 then writes[#writes + 1] = {key, 'w', cost, math.ceil((span - now) / 1000) + 60000} end
    end
  end
  return nil, out, writes
end

local function rl_commit(writes)
  for _, w in ipairs(writes) do
    if w[2] == 'g' then
      redis.call('SET', w[1], w[3], 'PX', w[4])
    else
      redis.call('INCRBY', w[1], w[3])
      redis.call('PEXPIRE', w[1], w[4])
    end
  end
end
"""

# Around a hold's script: refused -> {$RATE_REFUSED, index, retry µs, limit} with no hold placed.
# Otherwise the hold's own answer with the buckets' figures appended; the request is taken from the
# buckets unless the hold asked to be retried after mirroring (not loaded), so a request refused for
# credit (402) still counts, as it would in embedded mode.
_RATE_AROUND = """
local refused, rl_out, rl_writes = rl_check()
if refused then return {$RATE_REFUSED, refused[1], refused[2], refused[3]} end
local result = hold_script()
if result[1] ~= $ORG_NOT_LOADED and result[1] ~= $KEY_NOT_LOADED then rl_commit(rl_writes) end
for _, v in ipairs(rl_out) do result[#result + 1] = v end
return result
"""


def rate_check_source(hold_source: str) -> str:
    """A hold script's source with the rate-limit check and take in front of it, as one script."""
    return RATE_FUNCTIONS + "local function hold_script()\n" + hold_source + "\nend\n" + _lua(_RATE_AROUND)


def rate_checked(hold: Lua[PlaceReply]) -> Lua[PlaceReply]:
    """`hold` with the rate-limit check and take in front of it (one Lua call, one round trip)."""
    return Lua(
        hold.name + "+RATE",
        keys=(*hold.keys, "the rate-limit buckets (n)"),
        argv=hold.argv + "; then 4 per bucket (kind, limit, period or window end, cost), then n",
        source=rate_check_source(hold.source),
        reply=hold.reply,
    )


PLACE_RATED = rate_checked(PLACE)

# Endpoint health, recorded by the settle script. ARGV from `first` on are records of RECORD_FIELDS
# fields: endpoint id, ok (1/0), latency ms, ttft ms, completion tokens, generation ms, now (unix s),
# breaker threshold; or a sticky-routing record: 'S', key hash, endpoint id, ttl seconds, and padding.
HEALTH_FUNCTIONS = _lua(
    """
local function ewma(field, value)
  local old = tonumber(redis.call('HGET', '$PERF_KEY', field))
  if old then value = old + $EWMA_ALPHA * (value - old) end
  redis.call('HSET', '$PERF_KEY', field, string.format('%.3f', value))
end
local function record_health(first)
  for i = first, #ARGV, $RECORD_FIELDS do
    local ep = ARGV[i]
    if ep == 'S' then
      redis.call('SET', '$STICKY_PREFIX' .. ARGV[i + 1], ARGV[i + 2], 'EX', ARGV[i + 3])
    else
      local ok, now = ARGV[i + 1], tonumber(ARGV[i + 6])
      local bucket = '$HEALTH_MINUTE_PREFIX' .. ep .. ':' .. math.floor(now / 60)
      local slot = math.floor(now / $RECENT_SLOT_SECONDS)
      local ring = ep .. ':r' .. (slot % 4)
      if redis.call('HGET', '$BREAKER_KEY', ring) ~= tostring(slot) then
        redis.call('HSET', '$BREAKER_KEY', ring, slot, ring .. 'o', 0, ring .. 'f', 0)
      end
      if ok == '1' then
        local tok, gen = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
        if gen <= 1 then gen = math.max(tonumber(ARGV[i + 2]), 1) end
        redis.call('HINCRBY', bucket, 'ok', 1)
        redis.call('HINCRBY', bucket, 'lat', ARGV[i + 2])
        redis.call('HINCRBY', bucket, 'ttft', ARGV[i + 3])
        redis.call('HINCRBY', bucket, 'tok', tok)
        redis.call('HINCRBY', bucket, 'gen', gen)
        redis.call('HINCRBY', '$BREAKER_KEY', ring .. 'o', 1)
        redis.call('HSET', '$BREAKER_KEY', ep .. ':f', 0)
        redis.call('HDEL', '$BREAKER_KEY', ep .. ':open')
        ewma(ep .. ':lat', tonumber(ARGV[i + 2]))
        if tok > 0 and gen > 0 then ewma(ep .. ':tps', tok * 1000 / gen) end
      else
        redis.call('HINCRBY', bucket, 'fail', 1)
        redis.call('HINCRBY', '$BREAKER_KEY', ring .. 'f', 1)
        local f = redis.call('HINCRBY', '$BREAKER_KEY', ep .. ':f', 1)
        if f >= tonumber(ARGV[i + 7]) then redis.call('HSET', '$BREAKER_KEY', ep .. ':open', ARGV[i + 6]) end
      end
      redis.call('EXPIRE', bucket, $BUCKET_TTL)
    end
  end
end
""",
    PERF_KEY=PERF_KEY,
    EWMA_ALPHA=EWMA_ALPHA,
    RECORD_FIELDS=RECORD_FIELDS,
    STICKY_PREFIX=STICKY_PREFIX,
    HEALTH_MINUTE_PREFIX=HEALTH_MINUTE_PREFIX,
    RECENT_SLOT_SECONDS=RECENT_SLOT_SECONDS,
    BREAKER_KEY=BREAKER_KEY,
    BUCKET_TTL=(WINDOW_MINUTES + 1) * 60,
)

SETTLE_FIXED_ARGS = 4  # cost, amount - cost, event, hold id; the health records follow

SETTLE: Lua[SettleReply] = Lua(
    "SETTLE_LUA",
    keys=("org hash", "hold hash", HOLDS_ZSET, USAGE_STREAM, "key hash", "pending-generation key (optional)"),
    argv="cost, amount - cost, event, hold id, then health records (HEALTH_FUNCTIONS)",
    # The hold's reservation becomes the exact cost, pending until the ledger has it, and the usage
    # event is queued in the same step (release: cost 0). A hold the reaper already expired still
    # charges its cost. A retried settlement (its first reply lost to a Redis blip) finds the
    # pending-generation key (a short-lived copy of the event, so GET /generation answers before the
    # drain has written the row) and does nothing, so it never charges twice.
    source=NEG
    + HEALTH_FUNCTIONS
    + _lua(
        """
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
record_health($FIRST_RECORD)
return id
""",
        FIRST_RECORD=SETTLE_FIXED_ARGS + 1,
    ),
    reply=settle_reply,
)

APPLY: Lua[int] = Lua(
    "APPLY_LUA",
    keys=("org hash", USAGE_STREAM),
    argv="the ledger version the rows' write left ('' unknown), then triples (stream id, cost, key id or '')",
    # After the ledger rows for some usage events commit: each stream entry deleted here (exactly once)
    # moves its cost out of pending (and into the key's used). The mirrored balance drops by it too,
    # unless the mirror was loaded from a database that already had these rows (initver >= ARGV[1]).
    # Reply: how many entries it applied.
    source=_lua(
        NEG,
        """
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
      local k = '$KEY_PREFIX' .. ARGV[i + 2]
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
""",
        KEY_PREFIX=KEY_PREFIX,
    ),
    reply=_count,
)

INIT: Lua[InitReply] = Lua(
    "INIT_LUA",
    keys=("org hash",),
    argv="balance, ledger version",
    # Mirror an organisation from the database once. A partial hash keeps the holds and pending costs
    # it counts; a snapshot older than a version it has seen applied is refused.
    source=_lua(
        NEG,
        """
if redis.call('HEXISTS', KEYS[1], 'initver') == 1 then return $ALREADY_LOADED end
local seen = tonumber(redis.call('HGET', KEYS[1], 'aver') or '0')
if seen > tonumber(ARGV[2]) then return $STALE_SNAPSHOT end
local held = redis.call('HGET', KEYS[1], 'held') or '0'
local pending = redis.call('HGET', KEYS[1], 'pending') or '0'
redis.call('HSET', KEYS[1], 'bal', ARGV[1], 'avail', ARGV[1], 'held', held, 'pending', pending,
           'initver', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'avail', neg(held))
redis.call('HINCRBY', KEYS[1], 'avail', neg(pending))
redis.call('HDEL', KEYS[1], 'aver')
return $LOADED
""",
        **{c.name: c.value for c in InitReply},
    ),
    reply=lambda raw: InitReply(int(raw)),
)

KINIT: Lua[bool] = Lua(
    "KINIT_LUA",
    keys=("key hash",),
    argv="period, limit, usage already in the ledger for the period",
    # Mirror a key's credit limit for a period; in-flight holds and pending costs carry over. Reply:
    # True when it loaded (False: already mirrored for this period).
    source=_lua(
        NEG,
        """
if redis.call('HGET', KEYS[1], 'period') == ARGV[1] then return 0 end
local held = redis.call('HGET', KEYS[1], 'held') or '0'
local pending = redis.call('HGET', KEYS[1], 'pending') or '0'
redis.call('HSET', KEYS[1], 'period', ARGV[1], 'limit', ARGV[2], 'used', ARGV[3], 'avail', ARGV[2],
           'held', held, 'pending', pending)
redis.call('HINCRBY', KEYS[1], 'avail', neg(ARGV[3]))
redis.call('HINCRBY', KEYS[1], 'avail', neg(held))
redis.call('HINCRBY', KEYS[1], 'avail', neg(pending))
return 1
""",
    ),
    reply=_changed,
)

KLIMIT: Lua[bool] = Lua(
    "KLIMIT_LUA",
    keys=("key hash",),
    argv="new limit",
    # A key's limit changed: move its available amount by the difference (False: not mirrored).
    source=_lua(
        NEG,
        """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local old = redis.call('HGET', KEYS[1], 'limit') or '0'
redis.call('HINCRBY', KEYS[1], 'avail', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'avail', neg(old))
redis.call('HSET', KEYS[1], 'limit', ARGV[1])
return 1
""",
    ),
    reply=_changed,
)

CREDIT: Lua[bool] = Lua(
    "CREDIT_LUA",
    keys=("org hash",),
    argv="amount, ledger version after the entry",
    # A committed non-usage ledger entry (grant, purchase, refund): add its amount unless the mirror was
    # initialised from a balance that already included it. A partial hash only remembers the version, so
    # the snapshot that completes it includes the entry. True when it moved the mirror.
    source="""
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
""",
    reply=_changed,
)

REAP: Lua[bool] = Lua(
    "REAP_LUA",
    keys=("hold hash", HOLDS_ZSET),
    argv="hold id",
    # Release one hold (expired, its process died, or its placing call lost its reply); it also touches
    # the hold's sy:o:<org> and, for a limited key, sy:k:<key>, named in the hold hash. True when there
    # was a hold to release.
    source=_lua(
        NEG,
        """
local org = redis.call('HGET', KEYS[1], 'org')
local amount = redis.call('HGET', KEYS[1], 'amount')
redis.call('ZREM', KEYS[2], ARGV[1])
if not amount then return 0 end
local okey = '$ORG_PREFIX' .. org
redis.call('HINCRBY', okey, 'held', neg(amount))
redis.call('HINCRBY', okey, 'avail', amount)
if redis.call('HGET', KEYS[1], 'lim') == '1' then
  local kkey = '$KEY_PREFIX' .. redis.call('HGET', KEYS[1], 'key')
  redis.call('HINCRBY', kkey, 'held', neg(amount))
  redis.call('HINCRBY', kkey, 'avail', amount)
end
redis.call('DEL', KEYS[1])
return 1
""",
        ORG_PREFIX=ORG_PREFIX,
        KEY_PREFIX=KEY_PREFIX,
    ),
    reply=_changed,
)

CHARGE: Lua[int] = Lua(
    "CHARGE_LUA",
    keys=("tokens-per-minute buckets",),
    argv="3 per bucket: limit, period in µs, tokens",
    # Take finished requests' tokens from their tokens-per-minute buckets, into debt if need be.
    source="""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, #KEYS do
  local limit = tonumber(ARGV[3 * i - 2])
  local span = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tat = tat + cost * span / limit
  redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
return #KEYS
""",
    reply=_count,
)

MIRROR_FIX: Lua[bool] = Lua(
    "MIRROR_FIX_LUA",
    keys=("org hash",),
    argv="observed bal, correction",
    # The auditor repairs an organisation's mirrored balance if it still holds the value it saw; keeps
    # avail = bal - held - pending. True when it repaired.
    source="""
if redis.call('HGET', KEYS[1], 'bal') ~= ARGV[1] then return 0 end
redis.call('HINCRBY', KEYS[1], 'bal', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'avail', ARGV[2])
return 1
""",
    reply=_changed,
)

AVAIL_FIX: Lua[bool] = Lua(
    "AVAIL_FIX_LUA",
    keys=("org hash",),
    argv="observed avail",
    # The auditor recomputes avail from its parts (bal - held - pending) with exact HINCRBY steps, if
    # avail still holds the value it saw. True when it repaired.
    source=_lua(
        NEG,
        """
local h = redis.call('HMGET', KEYS[1], 'bal', 'held', 'pending', 'avail')
if h[4] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'avail', h[1])
redis.call('HINCRBY', KEYS[1], 'avail', neg(h[2]))
redis.call('HINCRBY', KEYS[1], 'avail', neg(h[3]))
return 1
""",
    ),
    reply=_changed,
)

REGISTRY: dict[str, Lua[Any]] = {
    s.name: s
    for s in (
        PLACE,
        PLACE_RATED,
        SETTLE,
        APPLY,
        INIT,
        KINIT,
        KLIMIT,
        CREDIT,
        REAP,
        CHARGE,
        MIRROR_FIX,
        AVAIL_FIX,
    )
}
