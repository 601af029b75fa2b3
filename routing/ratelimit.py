"""Rate limits on the hot path: requests and tokens per minute per key and per organisation, and the
free tier's requests per minute and per UTC day per organisation and per person (across all the
organisations of the key's user).

Every limit that applies to a request is checked and taken in one step, all or nothing: one Lua call
in full mode (Redis, so every web process shares the same buckets and clock), a few dict operations
under a lock in embedded mode. Per-minute limits are GCRA (a token bucket stored as one "theoretical
arrival time" per bucket: a full bucket allows a burst of `limit`, then one every `60 s / limit`). The
free tier's daily limit is a counter per UTC day, as OpenRouter counts it.

Tokens are only known after the answer, so a tokens-per-minute bucket admits a request while it has
any capacity left, and the request's actual tokens (prompt + completion) are taken from it after
settlement; a bucket in debt refuses until it has refilled.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings

from switchyard import lua
from switchyard.db import db_call
from switchyard.errors import RateLimited
from switchyard.shared import TTLCache, redis_enabled, start_shared

if TYPE_CHECKING:
    from accounts.keys import KeyInfo

MINUTE_US = 60_000_000
PURCHASE_CACHE_SECONDS = 60.0
TOKEN_FLUSH_SECONDS = 0.05

# The buckets' Lua (the check and take folded into the credit hold's call, and CHARGE for tokens) is in
# the registry, switchyard/lua.py (RATE_FUNCTIONS, rate_checked, CHARGE), with its KEYS and ARGV layout.


def fold(body: str) -> str:
    """A credit-hold script's source with the rate-limit check and take in front of it (one Lua call)."""
    return lua.rate_check_source(body)


# What each limit is called in errors, headers' documentation and /key.
DESCRIPTIONS = {
    "key_rpm": "this API key's requests per minute",
    "key_tpm": "this API key's tokens per minute",
    "org_rpm": "the organisation's requests per minute",
    "org_tpm": "the organisation's tokens per minute",
    "free_rpm": "free-model requests per minute",
    "free_rpd": "free-model requests per day (UTC)",
    "free_user_rpm": "free-model requests per minute across your organisations",
    "free_user_rpd": "free-model requests per day (UTC) across your organisations",
}


@dataclass(frozen=True, slots=True)
class Bucket:
    name: str  # a key of DESCRIPTIONS
    redis_key: str
    kind: str  # 'g' (GCRA over `span` µs) or 'w' (a counter until `span`, µs since the epoch)
    limit: int
    span: int
    cost: int = 1

    def args(self) -> list[str]:
        return [self.kind, str(self.limit), str(self.span), str(self.cost)]


@dataclass(frozen=True, slots=True)
class Decision:
    """The tightest limit a request passed: what the X-RateLimit-* headers report."""

    limit: int
    remaining: int
    reset_at_ms: int  # when the bucket is full again (GCRA) or the window ends, ms since the epoch

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(max(self.remaining, 0)).encode()),
            (b"x-ratelimit-reset", str(self.reset_at_ms).encode()),
        ]


def _setting(name: str) -> int:
    return int(getattr(settings, name))


def _pick(override: int | None, default_setting: str) -> int:
    """A per-key or per-organisation value wins over the deployment default; 0 means no limit."""
    return override if override is not None else _setting(default_setting)


def utc_day_end_us(now: float | None = None) -> tuple[str, int]:
    moment = datetime.fromtimestamp(now if now is not None else time.time(), tz=UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1)
    return start.strftime("%Y%m%d"), int(end.timestamp()) * 1_000_000


purchased_cache: TTLCache[int] = TTLCache(ttl=PURCHASE_CACHE_SECONDS)


def _purchased_units_sync(org_id: int) -> int:
    from django.db.models import Sum

    from billing.models import EntryKind, LedgerEntry

    total = LedgerEntry.objects.filter(organization_id=org_id, kind=EntryKind.PURCHASE).aggregate(
        total=Sum("amount_units")
    )["total"]
    return int(total or 0)


async def purchased_units(org_id: int) -> int:
    """All-time credit purchases (picodollars), cached per process for a minute: a purchase raises the
    free tier's daily limit within that."""
    key = str(org_id)
    cached = purchased_cache.get(key)
    if cached is None:
        cached = await db_call(_purchased_units_sync, org_id)
        purchased_cache.set(key, cached)
    return cached


def free_daily_limit(purchased: int) -> int:
    from switchyard.money import to_units

    threshold = to_units(settings.SWITCHYARD_FREE_PURCHASED_THRESHOLD_USD)
    if purchased >= threshold:
        return _setting("SWITCHYARD_FREE_REQUESTS_PER_DAY_PURCHASED")
    return _setting("SWITCHYARD_FREE_REQUESTS_PER_DAY")


def _token_buckets(key: KeyInfo, cost: int) -> list[Bucket]:
    out = []
    key_tpm = _pick(key.rate_limit_tpm, "SWITCHYARD_RATE_LIMIT_KEY_TPM")
    org_tpm = _pick(key.org_rate_limit_tpm, "SWITCHYARD_RATE_LIMIT_ORG_TPM")
    if key_tpm > 0:
        out.append(Bucket("key_tpm", f"sy:rl:k{key.id}:t", "g", key_tpm, MINUTE_US, cost))
    if org_tpm > 0:
        out.append(Bucket("org_tpm", f"sy:rl:o{key.org_id}:t", "g", org_tpm, MINUTE_US, cost))
    return out


async def buckets_for(key: KeyInfo, *, free: bool) -> list[Bucket]:
    """Every limit that applies to one request by this key (free: every candidate endpoint is free)."""
    out: list[Bucket] = []
    key_rpm = _pick(key.rate_limit_rpm, "SWITCHYARD_RATE_LIMIT_KEY_RPM")
    org_rpm = _pick(key.org_rate_limit_rpm, "SWITCHYARD_RATE_LIMIT_ORG_RPM")
    if key_rpm > 0:
        out.append(Bucket("key_rpm", f"sy:rl:k{key.id}:r", "g", key_rpm, MINUTE_US))
    if org_rpm > 0:
        out.append(Bucket("org_rpm", f"sy:rl:o{key.org_id}:r", "g", org_rpm, MINUTE_US))
    out += _token_buckets(key, 0)
    if free:
        out += await _free_buckets(key)
    return out


async def _free_buckets(key: KeyInfo) -> list[Bucket]:
    """The free tier's limits, per organisation and per person. Anyone can create organisations, so
    the same limits also count the key's user (`KeyInfo.user_id`) across every organisation they are
    in; the per-person daily limit is the one of the organisation the request comes from."""
    out: list[Bucket] = []
    user = key.user_id
    free_rpm = _setting("SWITCHYARD_FREE_REQUESTS_PER_MINUTE")
    if free_rpm > 0:
        out.append(Bucket("free_rpm", f"sy:rl:o{key.org_id}:fm", "g", free_rpm, MINUTE_US))
        if user is not None:
            out.append(Bucket("free_user_rpm", f"sy:rl:u{user}:fm", "g", free_rpm, MINUTE_US))
    per_day = _setting("SWITCHYARD_FREE_REQUESTS_PER_DAY")
    per_day_paid = _setting("SWITCHYARD_FREE_REQUESTS_PER_DAY_PURCHASED")
    if per_day > 0 or per_day_paid > 0:
        rpd = free_daily_limit(await purchased_units(key.org_id)) if per_day != per_day_paid else per_day
        if rpd > 0:
            day, end = utc_day_end_us()
            out.append(Bucket("free_rpd", f"sy:rl:o{key.org_id}:fd:{day}", "w", rpd, end))
            if user is not None:
                out.append(Bucket("free_user_rpd", f"sy:rl:u{user}:fd:{day}", "w", rpd, end))
    return out


# ---- embedded mode: the same arithmetic in process ----------------------------------------------


class LocalBuckets:
    """GCRA and window counters in one process (embedded mode), mirroring switchyard.lua's RATE_FUNCTIONS
    and CHARGE."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float, float]] = {}  # key -> (value, expires at, µs)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def _get(self, key: str, now: float) -> float:
        item = self._values.get(key)
        if item is None or item[1] <= now:
            return 0.0
        return item[0]

    def check(self, buckets: list[Bucket], now: float | None = None) -> list[int] | lua.RateRefused:
        """(requests left, µs until full again) per bucket, all taken; or the first that refuses."""
        now = time.time() * 1_000_000 if now is None else now
        with self._lock:
            out: list[int] = []
            writes: list[tuple[str, float, float]] = []
            for i, b in enumerate(buckets, start=1):
                need = max(b.cost, 1)
                if b.kind == "g":
                    interval = b.span / b.limit
                    tat = max(self._get(b.redis_key, now), now)
                    allow_at = tat + need * interval - b.span
                    if allow_at > now:
                        return lua.RateRefused(i, math.ceil(allow_at - now), b.limit)
                    new_tat = tat + b.cost * interval
                    out += [math.floor((b.span - (new_tat - now)) / interval), math.ceil(new_tat - now)]
                    if b.cost > 0:
                        writes.append((b.redis_key, new_tat, new_tat + 1_000_000))
                else:
                    count = self._get(b.redis_key, now)
                    if count + need > b.limit:
                        return lua.RateRefused(i, math.ceil(b.span - now), b.limit)
                    out += [int(b.limit - count - b.cost), math.ceil(b.span - now)]
                    if b.cost > 0:
                        writes.append((b.redis_key, count + b.cost, b.span + 60_000_000))
            for key, value, expires in writes:
                self._values[key] = (value, expires)
            if len(self._values) > 200_000:  # forget expired buckets now and then
                self._values = {k: v for k, v in self._values.items() if v[1] > now}
            return out

    def charge(self, buckets: list[Bucket], now: float | None = None) -> None:
        now = time.time() * 1_000_000 if now is None else now
        with self._lock:
            for b in buckets:
                tat = max(self._get(b.redis_key, now), now) + b.cost * b.span / b.limit
                self._values[b.redis_key] = (tat, tat + 1_000_000)


local_buckets = LocalBuckets()


# ---- the interface the hot path uses -------------------------------------------------------------


class RateGate:
    """The rate limits of one request. Embedded mode checks and takes them at once (`rate_gate`); full
    mode hands the gate to the credit hold (`billing.holds.hold_place(rate=...)`, a billing.holds.RateCheck),
    whose Lua call (switchyard.lua.PLACE_RATED) then checks and takes them too: no extra Redis round trip. `decision` is set once the request passed."""

    def __init__(self, buckets: list[Bucket]) -> None:
        self.buckets = buckets
        self.keys = [b.redis_key for b in buckets]
        self.args = [a for b in buckets for a in b.args()] + [str(len(buckets))]
        self.decision: Decision | None = None

    def admitted(self, figures: Sequence[int]) -> None:
        """Every bucket passed; `figures` is (left, µs until reset) per bucket."""
        values = figures
        now_ms = int(time.time() * 1000)
        # Report the requests limit with the fewest left (a tokens limit only when it is alone).
        counted = [i for i, b in enumerate(self.buckets) if b.cost > 0] or list(range(len(self.buckets)))
        for i in counted:
            remaining, reset_us = values[2 * i], values[2 * i + 1]
            if self.decision is None or remaining < self.decision.remaining:
                self.decision = Decision(
                    self.buckets[i].limit, remaining, now_ms + math.ceil(reset_us / 1000)
                )

    def refused(self, bucket: int, retry_us: int) -> RateLimited:
        """The 429 for the `bucket`-th (1-based) of this gate's buckets, which refused."""
        return _refused(self.buckets[bucket - 1], retry_us=retry_us, now_ms=int(time.time() * 1000))


async def rate_gate(key: KeyInfo, *, free: bool) -> RateGate | None:
    """The limits that apply to one request (free: every candidate endpoint is free), or None.

    Embedded mode takes the request from them now or raises 429; full mode leaves that to the hold."""
    buckets = await buckets_for(key, free=free)
    if not buckets:
        return None
    gate = RateGate(buckets)
    if not redis_enabled():
        result = local_buckets.check(buckets)
        if isinstance(result, lua.RateRefused):
            raise gate.refused(result.bucket, result.retry_us)
        gate.admitted(result)
    return gate


def _refused(bucket: Bucket, *, retry_us: int, now_ms: int) -> RateLimited:
    retry_after = max(math.ceil(retry_us / 1_000_000), 1)
    reset_ms = now_ms + math.ceil(retry_us / 1000)
    return RateLimited(
        f"Rate limit exceeded: {DESCRIPTIONS[bucket.name]} ({bucket.limit}). Retry in {retry_after} s.",
        metadata={"rate_limit": bucket.name, "limit": bucket.limit, "retry_after": retry_after},
        headers={
            "Retry-After": str(retry_after),
            "X-RateLimit-Limit": str(bucket.limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset_ms),
        },
    )


class TokenCharges:
    """Tokens to take from tokens-per-minute buckets, gathered per process and sent to Redis in one
    Lua call every TOKEN_FLUSH_SECONDS (one call per burst, not one per request). A bucket learns of
    a request's tokens at most that much later; embedded mode takes them at once."""

    def __init__(self) -> None:
        self.pending: dict[str, list[int]] = {}  # redis key -> [limit, span, tokens]
        self.task: asyncio.Task[None] | None = None

    def add(self, buckets: list[Bucket]) -> None:
        if not redis_enabled():
            local_buckets.charge(buckets)
            return
        for b in buckets:
            entry = self.pending.setdefault(b.redis_key, [b.limit, b.span, 0])
            entry[0], entry[2] = b.limit, entry[2] + b.cost
        if self.task is None:
            self.task = start_shared(self._flush_later())

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(TOKEN_FLUSH_SECONDS)
        finally:
            self.task = None
        await self.flush()

    async def flush(self) -> None:
        pending, self.pending = self.pending, {}
        if not pending:
            return
        keys = list(pending)
        args = [str(v) for key in keys for v in pending[key]]
        try:
            await lua.CHARGE(keys=keys, args=args)
        except Exception:
            logging.getLogger("switchyard.ratelimit").exception("could not charge tokens to %s", keys)


token_charges = TokenCharges()


def tokens_charge_later(key: KeyInfo, tokens: int) -> None:
    """Take a finished request's tokens (prompt + completion) from its key's and organisation's
    tokens-per-minute buckets, off the response path; a no-op when neither has such a limit."""
    if tokens > 0:
        buckets = _token_buckets(key, tokens)
        if buckets:
            token_charges.add(buckets)


def with_headers(send: Any, gate: RateGate | Decision | None) -> Any:
    """Wrap an ASGI `send` so the response's start carries the X-RateLimit-* headers."""
    decision = gate.decision if isinstance(gate, RateGate) else gate
    if decision is None:
        return send
    extra = decision.headers()

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            names = {name for name, _ in message.get("headers", ())}
            message = {
                **message,
                "headers": [*message.get("headers", ()), *(h for h in extra if h[0] not in names)],
            }
        await send(message)

    return wrapped


def rate_limit_summary(
    *, key_rpm: int | None, key_tpm: int | None, org_rpm: int | None, org_tpm: int | None, org_id: int
) -> dict[str, Any]:
    """What `GET /key` says about the limits on a key (overrides as stored; None: no limit)."""
    return {
        "requests": _pick(key_rpm, "SWITCHYARD_RATE_LIMIT_KEY_RPM") or None,
        "tokens": _pick(key_tpm, "SWITCHYARD_RATE_LIMIT_KEY_TPM") or None,
        "interval": "60s",
        "organization_requests": _pick(org_rpm, "SWITCHYARD_RATE_LIMIT_ORG_RPM") or None,
        "organization_tokens": _pick(org_tpm, "SWITCHYARD_RATE_LIMIT_ORG_TPM") or None,
        "free_requests_per_minute": _setting("SWITCHYARD_FREE_REQUESTS_PER_MINUTE") or None,
        "free_requests_per_day": free_daily_limit(_purchased_units_sync(org_id)) or None,
    }
