"""Endpoint health: rolling success rate, latency, time to first token, throughput, and a circuit breaker.

Every web process shares one view. In full mode the numbers live in Redis and are written by the
settle Lua script (no extra round trip on the request path); each process refreshes its copy of the
breaker states and recent-failure counts once a second in the background, so the router reads only
memory. In embedded mode (one process) they live here.

Three views of an endpoint's health, each for its own purpose:

* minute buckets over the last 30 minutes (`sy:hm:<ep>:<minute>`): uptime, mean latency, TTFT and
  throughput, shown on `/models/{author}/{slug}/endpoints` and the admin health page;
* a 30-second window of successes and failures (four 10-second slots per endpoint in `sy:cb`): an
  endpoint with significant recent failures is *degraded* and the default load balancer tries it only
  after the stable ones (OpenRouter's "no significant outage in the last 30 seconds");
* moving averages of latency and throughput (`sy:hp`), which `sort: "latency" | "throughput"` and
  `preferred_max_latency` / `preferred_min_throughput` use.

Breaker: after SWITCHYARD_BREAKER_THRESHOLD consecutive failures an endpoint opens and is tried only
as a last resort. After SWITCHYARD_BREAKER_COOLDOWN_SECONDS it is half-open: each process lets one
request through every SWITCHYARD_BREAKER_PROBE_SECONDS as a probe (tried first); a success closes the
breaker, a failure re-opens it for another cooldown. When every candidate is open they are tried
anyway, so a false positive never becomes an outage.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from switchyard.lua import (
    BREAKER_KEY,
    EWMA_ALPHA,
    PERF_KEY,
    RECENT_SLOT_SECONDS,
    STICKY_PREFIX,
    WINDOW_MINUTES,
)
from switchyard.shared import async_redis, redis_enabled, setting, start_shared, sync_redis

logger = logging.getLogger("switchyard.health")

RECENT_SLOTS = 3  # the current slot and the two before it: the last 30 seconds
# "Significant" recent failures: at least this many in the window, and at least this share of attempts.
RECENT_MIN_FAILURES = 3
RECENT_MIN_ERROR_RATE = 0.25
PERF_REFRESH_SECONDS = 5.0
# The settle script records the outcomes (switchyard.lua.HEALTH_FUNCTIONS, in SETTLE); its keys and
# parameters are defined there, beside the Lua, and read here.

# Set by the router for a request that may be routed sticky; read when the request settles, so that
# the endpoint that answered is remembered (in the same Redis call that settles the hold).
sticky_context: contextvars.ContextVar[str | None] = contextvars.ContextVar("sy_sticky", default=None)


def threshold() -> int:
    return int(setting("SWITCHYARD_BREAKER_THRESHOLD"))


def cooldown() -> float:
    return float(setting("SWITCHYARD_BREAKER_COOLDOWN_SECONDS"))


def probe_interval() -> float:
    return float(setting("SWITCHYARD_BREAKER_PROBE_SECONDS"))


def sticky_ttl() -> int:
    return int(setting("SWITCHYARD_STICKY_TTL_SECONDS"))


def __getattr__(name: str) -> Any:
    # Older callers (switchyard/metrics.py) import these as constants; they follow the settings.
    if name == "BREAKER_COOLDOWN":
        return cooldown()
    if name == "BREAKER_THRESHOLD":
        return threshold()
    if name == "PROBE_INTERVAL":
        return probe_interval()
    raise AttributeError(name)


@dataclass(slots=True)
class Outcome:
    endpoint_id: int
    ok: bool
    latency_ms: int
    ttft_ms: int = 0
    tokens: int = 0
    generation_ms: int = 0

    @property
    def effective_generation_ms(self) -> int:
        """Time spent generating; for a whole (non-streamed) answer, whose tokens arrive at once, the
        whole latency, so throughput is end to end."""
        return self.generation_ms if self.generation_ms > 1 else max(self.latency_ms, 1)

    def args(self, now: int) -> list[str]:
        return [
            str(self.endpoint_id),
            "1" if self.ok else "0",
            str(self.latency_ms),
            str(self.ttft_ms),
            str(self.tokens),
            str(self.generation_ms),
            str(now),
            str(threshold()),
        ]


@dataclass(frozen=True, slots=True)
class Perf:
    """Moving averages from successful requests: latency (ms, time to first token when streamed) and
    output throughput (tokens per second). None until measured."""

    latency_ms: float | None = None
    throughput: float | None = None


def _ewma(old: float | None, value: float) -> float:
    return value if old is None else old + EWMA_ALPHA * (value - old)


class _Local:
    """Embedded mode's book: minute buckets, recent window, moving averages and breaker state here."""

    def __init__(self) -> None:
        self.buckets: dict[tuple[int, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.failures: dict[int, int] = defaultdict(int)
        self.opened: dict[int, float] = {}
        # endpoint -> slot -> [ok, fail]
        self.recent: dict[int, dict[int, list[int]]] = defaultdict(dict)
        self.perf: dict[int, Perf] = {}
        self.sticky: dict[str, tuple[int, float]] = {}

    def record(self, o: Outcome, now: float) -> None:
        bucket = self.buckets[(o.endpoint_id, int(now // 60))]
        slot = int(now // RECENT_SLOT_SECONDS)
        window = self.recent[o.endpoint_id]
        counts = window.setdefault(slot, [0, 0])
        for old in [s for s in window if s <= slot - RECENT_SLOTS]:
            del window[old]
        if o.ok:
            gen = o.effective_generation_ms
            bucket["ok"] += 1
            bucket["lat"] += o.latency_ms
            bucket["ttft"] += o.ttft_ms
            bucket["tok"] += o.tokens
            bucket["gen"] += gen
            counts[0] += 1
            self.failures[o.endpoint_id] = 0
            self.opened.pop(o.endpoint_id, None)
            old_perf = self.perf.get(o.endpoint_id, Perf())
            tps = old_perf.throughput
            if o.tokens > 0 and gen > 0:
                tps = _ewma(tps, o.tokens * 1000 / gen)
            self.perf[o.endpoint_id] = Perf(_ewma(old_perf.latency_ms, o.latency_ms), tps)
        else:
            bucket["fail"] += 1
            counts[1] += 1
            self.failures[o.endpoint_id] += 1
            if self.failures[o.endpoint_id] >= threshold():
                self.opened[o.endpoint_id] = now
        if len(self.buckets) > 50_000:
            horizon = int(now // 60) - WINDOW_MINUTES
            for key in [k for k in self.buckets if k[1] < horizon]:
                del self.buckets[key]

    def recent_counts(self, endpoint_id: int, now: float) -> tuple[int, int]:
        slot = int(now // RECENT_SLOT_SECONDS)
        ok = fail = 0
        for s, (o, f) in self.recent.get(endpoint_id, {}).items():
            if s > slot - RECENT_SLOTS:
                ok, fail = ok + o, fail + f
        return ok, fail


class HealthBook:
    def __init__(self) -> None:
        self.local = _Local()
        # Full mode: the shared view, refreshed from Redis in the background.
        self.opened: dict[int, float] = {}
        self.recent: dict[int, tuple[int, int]] = {}
        self.perf: dict[int, Perf] = {}
        self.last_probe: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._perf_at = 0.0
        self._synced_at = 0.0

    # ---- writes ----------------------------------------------------------------------------

    def record_local(self, outcomes: list[Outcome]) -> None:
        """Embedded mode: record the attempts' outcomes (and remember a sticky request's endpoint)."""
        now = time.time()
        for o in outcomes:
            self.local.record(o, now)
        key, winner = sticky_context.get(), _winner(outcomes)
        if key and winner is not None:
            self.local.sticky[key] = (winner, now + sticky_ttl())
            if len(self.local.sticky) > 100_000:
                self.local.sticky = {k: v for k, v in self.local.sticky.items() if v[1] > now}

    def settle_args(self, outcomes: list[Outcome]) -> list[str]:
        """Full mode: the outcomes as the settle script's health records (switchyard.lua.HEALTH_FUNCTIONS)."""
        now = int(time.time())
        args: list[str] = []
        for o in outcomes:
            args += o.args(now)
        key, winner = sticky_context.get(), _winner(outcomes)
        if key and winner is not None:
            args += ["S", key, str(winner), str(sticky_ttl()), "", "", "", ""]
        return args

    # ---- reads (hot path, memory only) --------------------------------------------------------

    def _open_since(self, endpoint_id: int) -> float | None:
        if redis_enabled():
            self._ensure_refresh()
            return self.opened.get(endpoint_id)
        return self.local.opened.get(endpoint_id)

    def allows(self, endpoint_id: int, now: float | None = None) -> bool:
        """False while the breaker is open; in half-open state, True for one probe per interval."""
        since = self._open_since(endpoint_id)
        if since is None:
            return True
        now = now or time.time()
        if now - since < cooldown():
            return False
        if now - self.last_probe.get(endpoint_id, 0.0) >= probe_interval():
            self.last_probe[endpoint_id] = now
            return True
        return False

    def state(self, endpoint_id: int, now: float | None = None) -> str:
        since = self._open_since(endpoint_id)
        if since is None:
            return "closed"
        return "open" if (now or time.time()) - since < cooldown() else "half_open"

    def recent_counts(self, endpoint_id: int, now: float | None = None) -> tuple[int, int]:
        """(successes, failures) in the last 30 seconds."""
        if redis_enabled():
            self._ensure_refresh()
            return self.recent.get(endpoint_id, (0, 0))
        return self.local.recent_counts(endpoint_id, now or time.time())

    def degraded(self, endpoint_id: int, now: float | None = None) -> bool:
        """Significant failures in the last 30 seconds (the load balancer tries it after stable ones)."""
        ok, fail = self.recent_counts(endpoint_id, now)
        return fail >= RECENT_MIN_FAILURES and fail >= RECENT_MIN_ERROR_RATE * (ok + fail)

    def perf_of(self, endpoint_id: int) -> Perf:
        if redis_enabled():
            self._ensure_refresh()
            return self.perf.get(endpoint_id, Perf())
        return self.local.perf.get(endpoint_id, Perf())

    async def sticky_get(self, key: str) -> int | None:
        """The endpoint that last answered this sticky key, while the entry lives."""
        if not redis_enabled():
            entry = self.local.sticky.get(key)
            if entry is None or entry[1] <= time.time():
                return None
            return entry[0]
        try:
            raw = await async_redis().get(STICKY_PREFIX + key)
        except Exception:
            logger.warning("sticky routing lookup failed; routing without it", exc_info=True)
            return None
        return int(raw) if raw else None

    # ---- the shared view (full mode) ----------------------------------------------------------

    def _ensure_refresh(self) -> None:
        if self._task is None or self._task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # a sync caller (admin, DRF view): read Redis at most once a second
                if time.monotonic() - self._synced_at >= 1.0:
                    self._refresh_sync()
                return
            # The loop is looked up first: a coroutine made for a caller without one was never awaited.
            self._task = start_shared(self._refresh_loop(), loop)

    async def _refresh_loop(self) -> None:
        while True:
            try:
                client = async_redis()
                self._apply(await client.hgetall(BREAKER_KEY), time.time())
                if time.monotonic() - self._perf_at >= PERF_REFRESH_SECONDS:
                    self.perf = _parse_perf(await client.hgetall(PERF_KEY))
                    self._perf_at = time.monotonic()
            except Exception:
                logger.warning("could not refresh endpoint health; keeping the last view", exc_info=True)
            await asyncio.sleep(1.0)

    def _refresh_sync(self) -> None:
        self._synced_at = time.monotonic()
        client = sync_redis()
        self._apply(client.hgetall(BREAKER_KEY), time.time())
        self.perf = _parse_perf(client.hgetall(PERF_KEY))

    def _apply(self, raw: dict[Any, Any], now: float) -> None:
        self.opened = parse_open(raw)
        self.recent = _parse_recent(raw, now)

    def reset(self) -> None:
        self.local = _Local()
        self.opened = {}
        self.recent = {}
        self.perf = {}
        self.last_probe = {}
        self._perf_at = 0.0
        self._synced_at = 0.0


def _winner(outcomes: list[Outcome]) -> int | None:
    return next((o.endpoint_id for o in reversed(outcomes) if o.ok), None)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_open(raw: dict[Any, Any]) -> dict[int, float]:
    out = {}
    for key, value in raw.items():
        name = _text(key)
        if name.endswith(":open"):
            out[int(name.split(":", 1)[0])] = float(value)
    return out


def _parse_recent(raw: dict[Any, Any], now: float) -> dict[int, tuple[int, int]]:
    """Sum the 10-second slots of the last 30 seconds from `<ep>:r<n>` (slot), `...o` and `...f`."""
    fields = {_text(k): _text(v) for k, v in raw.items()}
    current = int(now // RECENT_SLOT_SECONDS)
    out: dict[int, tuple[int, int]] = {}
    for name, value in fields.items():
        ep, _, ring = name.partition(":")
        if len(ring) != 2 or ring[0] != "r" or not ring[1].isdigit():
            continue
        if int(value) <= current - RECENT_SLOTS:
            continue
        ok, fail = out.get(int(ep), (0, 0))
        out[int(ep)] = (ok + int(fields.get(name + "o", 0)), fail + int(fields.get(name + "f", 0)))
    return out


def _parse_perf(raw: dict[Any, Any]) -> dict[int, Perf]:
    lat: dict[int, float] = {}
    tps: dict[int, float] = {}
    for key, value in raw.items():
        ep, _, metric = _text(key).partition(":")
        (lat if metric == "lat" else tps)[int(ep)] = float(value)
    return {ep: Perf(lat.get(ep), tps.get(ep)) for ep in lat.keys() | tps.keys()}


book = HealthBook()


def _summarise(buckets: list[dict[str, int]]) -> dict[str, Any]:
    ok = sum(b.get("ok", 0) for b in buckets)
    fail = sum(b.get("fail", 0) for b in buckets)
    if ok + fail == 0:
        return {}
    gen_ms = sum(b.get("gen", 0) for b in buckets)
    tokens = sum(b.get("tok", 0) for b in buckets)
    return {
        "requests": ok + fail,
        "failures": fail,
        "uptime": round(100.0 * ok / (ok + fail), 2),
        "latency_ms": round(sum(b.get("lat", 0) for b in buckets) / ok) if ok else None,
        "ttft_ms": round(sum(b.get("ttft", 0) for b in buckets) / ok) if ok else None,
        "throughput": round(tokens * 1000 / gen_ms, 1) if gen_ms else None,
    }


def _live(ep: int, now: float, consecutive: int) -> dict[str, Any]:
    ok, fail = book.recent_counts(ep, now)
    return {
        "circuit": book.state(ep, now),
        "consecutive_failures": consecutive,
        "recent_ok": ok,
        "recent_failures": fail,
        "degraded": book.degraded(ep, now),
    }


def stats_sync(endpoint_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Per endpoint: the last 30 minutes (requests, uptime %, mean latency and TTFT, tokens per
    second) and the live state (circuit, consecutive failures, the 30-second window)."""
    now = time.time()
    minute = int(now // 60)
    minutes = range(minute - WINDOW_MINUTES + 1, minute + 1)
    out: dict[int, dict[str, Any]] = {}
    if not redis_enabled():
        for ep in endpoint_ids:
            buckets = [book.local.buckets[(ep, m)] for m in minutes if (ep, m) in book.local.buckets]
            out[ep] = {**_summarise(buckets), **_live(ep, now, book.local.failures.get(ep, 0))}
        return out
    client = sync_redis()
    pipe = client.pipeline(transaction=False)
    for ep in endpoint_ids:
        for m in minutes:
            pipe.hgetall(f"sy:hm:{ep}:{m}")
    pipe.hgetall(BREAKER_KEY)
    results = pipe.execute()
    breaker = results[-1]
    book._apply(breaker, now)
    consecutive = {
        int(_text(k).split(":", 1)[0]): int(v) for k, v in breaker.items() if _text(k).endswith(":f")
    }
    for i, ep in enumerate(endpoint_ids):
        chunk = results[i * len(minutes) : (i + 1) * len(minutes)]
        buckets = [{_text(k): int(v) for k, v in b.items()} for b in chunk if b]
        out[ep] = {**_summarise(buckets), **_live(ep, now, consecutive.get(ep, 0))}
    return out


def breaker_reset(endpoint_id: int) -> None:
    """Close an endpoint's circuit now (admin): forget its failures, in every process's shared view."""
    book.local.failures.pop(endpoint_id, None)
    book.local.opened.pop(endpoint_id, None)
    book.local.recent.pop(endpoint_id, None)
    book.opened.pop(endpoint_id, None)
    book.recent.pop(endpoint_id, None)
    if redis_enabled():
        fields = [f"{endpoint_id}:open", f"{endpoint_id}:f"]
        for n in range(4):
            fields += [f"{endpoint_id}:r{n}", f"{endpoint_id}:r{n}o", f"{endpoint_id}:r{n}f"]
        sync_redis().hdel(BREAKER_KEY, *fields)
