"""Endpoint health: rolling success rate, latency, time to first token, throughput, and a circuit breaker.

Every web process shares one view. In full mode the numbers live in Redis and are written by the
settle Lua script (no extra round trip on the request path); each process refreshes its copy of the
breaker states once a second in the background. In embedded mode (one process) they live here.

Breaker: after BREAKER_THRESHOLD consecutive failures an endpoint opens and is skipped. After
BREAKER_COOLDOWN seconds it is half-open: each process lets one request through every
PROBE_INTERVAL seconds as a probe; a success closes it, a failure re-opens it for another cooldown.
When every candidate is open they are tried anyway, so a false positive never becomes an outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from switchyard.shared import async_redis, redis_enabled, sync_redis

logger = logging.getLogger("switchyard.health")

BREAKER_THRESHOLD = 5
BREAKER_COOLDOWN = 30.0
PROBE_INTERVAL = 5.0
WINDOW_MINUTES = 30
BREAKER_KEY = "sy:cb"

# Appended to the settle script: ARGV from `first` on are records of 7 fields each:
# endpoint id, ok (1/0), latency ms, ttft ms, completion tokens, generation ms, now (unix seconds).
HEALTH_LUA = f"""
local function record_health(first)
  for i = first, #ARGV, 7 do
    local ep, ok, now = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 6])
    local bucket = 'sy:hm:' .. ep .. ':' .. math.floor(now / 60)
    if ok == '1' then
      redis.call('HINCRBY', bucket, 'ok', 1)
      redis.call('HINCRBY', bucket, 'lat', ARGV[i + 2])
      redis.call('HINCRBY', bucket, 'ttft', ARGV[i + 3])
      redis.call('HINCRBY', bucket, 'tok', ARGV[i + 4])
      redis.call('HINCRBY', bucket, 'gen', ARGV[i + 5])
      redis.call('HSET', 'sy:cb', ep .. ':f', 0)
      redis.call('HDEL', 'sy:cb', ep .. ':open')
    else
      redis.call('HINCRBY', bucket, 'fail', 1)
      local f = redis.call('HINCRBY', 'sy:cb', ep .. ':f', 1)
      if f >= {BREAKER_THRESHOLD} then redis.call('HSET', 'sy:cb', ep .. ':open', ARGV[i + 6]) end
    end
    redis.call('EXPIRE', bucket, {(WINDOW_MINUTES + 1) * 60})
  end
end
"""


@dataclass(slots=True)
class Outcome:
    endpoint_id: int
    ok: bool
    latency_ms: int
    ttft_ms: int = 0
    tokens: int = 0
    generation_ms: int = 0

    def args(self, now: int) -> list[str]:
        return [
            str(self.endpoint_id),
            "1" if self.ok else "0",
            str(self.latency_ms),
            str(self.ttft_ms),
            str(self.tokens),
            str(self.generation_ms),
            str(now),
        ]


class _Local:
    """Embedded mode's book: minute buckets and breaker state in this process."""

    def __init__(self) -> None:
        self.buckets: dict[tuple[int, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.failures: dict[int, int] = defaultdict(int)
        self.opened: dict[int, float] = {}

    def record(self, o: Outcome, now: float) -> None:
        bucket = self.buckets[(o.endpoint_id, int(now // 60))]
        if o.ok:
            bucket["ok"] += 1
            bucket["lat"] += o.latency_ms
            bucket["ttft"] += o.ttft_ms
            bucket["tok"] += o.tokens
            bucket["gen"] += o.generation_ms
            self.failures[o.endpoint_id] = 0
            self.opened.pop(o.endpoint_id, None)
        else:
            bucket["fail"] += 1
            self.failures[o.endpoint_id] += 1
            if self.failures[o.endpoint_id] >= BREAKER_THRESHOLD:
                self.opened[o.endpoint_id] = now
        if len(self.buckets) > 50_000:
            horizon = int(now // 60) - WINDOW_MINUTES
            for key in [k for k in self.buckets if k[1] < horizon]:
                del self.buckets[key]


class HealthBook:
    def __init__(self) -> None:
        self.local = _Local()
        self.opened: dict[int, float] = {}  # shared breaker view (full mode), refreshed in background
        self.last_probe: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None

    # ---- writes ----------------------------------------------------------------------------

    def record_local(self, outcomes: list[Outcome]) -> None:
        now = time.time()
        for o in outcomes:
            self.local.record(o, now)

    def settle_args(self, outcomes: list[Outcome]) -> list[str]:
        now = int(time.time())
        args: list[str] = []
        for o in outcomes:
            args += o.args(now)
        return args

    # ---- breaker reads (hot path, memory only) -------------------------------------------------

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
        if now - since < BREAKER_COOLDOWN:
            return False
        if now - self.last_probe.get(endpoint_id, 0.0) >= PROBE_INTERVAL:
            self.last_probe[endpoint_id] = now
            return True
        return False

    def state(self, endpoint_id: int, now: float | None = None) -> str:
        since = self._open_since(endpoint_id)
        if since is None:
            return "closed"
        return "open" if (now or time.time()) - since < BREAKER_COOLDOWN else "half_open"

    def _ensure_refresh(self) -> None:
        if self._task is None or self._task.done():
            try:
                self._task = asyncio.get_running_loop().create_task(self._refresh_loop())
            except RuntimeError:
                self._refresh_sync()

    async def _refresh_loop(self) -> None:
        while True:
            try:
                raw = await async_redis().hgetall(BREAKER_KEY)
                self.opened = _parse_open(raw)
            except Exception:
                logger.warning("could not refresh breaker states; keeping the last view", exc_info=True)
            await asyncio.sleep(1.0)

    def _refresh_sync(self) -> None:
        self.opened = _parse_open(sync_redis().hgetall(BREAKER_KEY))

    def reset(self) -> None:
        self.local = _Local()
        self.opened = {}
        self.last_probe = {}


def _parse_open(raw: dict[Any, Any]) -> dict[int, float]:
    out = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else key
        if name.endswith(":open"):
            out[int(name.split(":", 1)[0])] = float(value)
    return out


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
        "uptime": round(100.0 * ok / (ok + fail), 2),
        "latency_ms": round(sum(b.get("lat", 0) for b in buckets) / ok) if ok else None,
        "ttft_ms": round(sum(b.get("ttft", 0) for b in buckets) / ok) if ok else None,
        "throughput": round(tokens * 1000 / gen_ms, 1) if gen_ms else None,
    }


def stats_sync(endpoint_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Last 30 minutes per endpoint: requests, uptime %, mean latency and TTFT, tokens per second."""
    minute = int(time.time() // 60)
    minutes = range(minute - WINDOW_MINUTES + 1, minute + 1)
    out: dict[int, dict[str, Any]] = {}
    if not redis_enabled():
        for ep in endpoint_ids:
            buckets = [book.local.buckets[(ep, m)] for m in minutes if (ep, m) in book.local.buckets]
            out[ep] = {**_summarise(buckets), "circuit": book.state(ep)}
        return out
    client = sync_redis()
    pipe = client.pipeline(transaction=False)
    for ep in endpoint_ids:
        for m in minutes:
            pipe.hgetall(f"sy:hm:{ep}:{m}")
    results = pipe.execute() if endpoint_ids else []
    book._refresh_sync()
    for i, ep in enumerate(endpoint_ids):
        chunk = results[i * len(minutes) : (i + 1) * len(minutes)]
        buckets = [{k.decode(): int(v) for k, v in b.items()} for b in chunk if b]
        out[ep] = {**_summarise(buckets), "circuit": book.state(ep)}
    return out
