"""Failover benchmark: the gateway (full mode, 2 uvicorn workers sharing health through Redis) in front
of three mock OpenAI endpoints for one model, one of which goes down.

    .venv/bin/python bench/failover.py                 # both outage kinds: refused, 503
    FAILOVER_DOWN=503 FAILOVER_N=3000 .venv/bin/python bench/failover.py

For each outage kind it prints:
  * healthy:  success rate, p50 / p99 with all three endpoints up (default routing: price-weighted);
  * outage:   the same once the down endpoint's circuit is open (the warm-up until then is reported
              separately: every request still succeeds, by failing over);
  * failover: the latency one failover adds (requests pinned to [down, up] vs [up], breaker disabled
              so every request fails over), next to the time of the failed attempt alone.

The down endpoint is the cheapest, so the load balancer would send it most traffic. Kinds: `refused`
(its process is stopped: connection refused) and `503` (a fake that answers 503 after the same
latency as the healthy mocks). Everything binds to 127.0.0.1; every process started is stopped on exit.

Environment: FAILOVER_DATABASE_URL (postgres://postgres@127.0.0.1:5432/switchyard_c, created if
missing), FAILOVER_REDIS_URL (redis://127.0.0.1:6379/3, flushed), FAILOVER_N (2000 requests per
phase), FAILOVER_C (8 concurrent clients), FAILOVER_LATENCY_MS (20, the mocks' latency),
FAILOVER_DOWN (refused,503), FAILOVER_PORT_BASE (9300), FAILOVER_OUTAGE_SECONDS (40: the outage
phase lasts at least this long, more than the 30 s breaker cooldown, so it includes half-open probes).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness

HERE = harness.HERE
ROOT = harness.ROOT
PY = harness.PY
MODEL = "bench/failover-model"
DB = os.environ.get("FAILOVER_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/switchyard_c")
REDIS = os.environ.get("FAILOVER_REDIS_URL", "redis://127.0.0.1:6379/3")
N = int(os.environ.get("FAILOVER_N", 2000))
C = int(os.environ.get("FAILOVER_C", 8))
LATENCY_MS = float(os.environ.get("FAILOVER_LATENCY_MS", 20))
OUTAGE_SECONDS = float(os.environ.get("FAILOVER_OUTAGE_SECONDS", 40))
KINDS = [k for k in os.environ.get("FAILOVER_DOWN", "refused,503").split(",") if k]
BASE = int(os.environ.get("FAILOVER_PORT_BASE", 9300))
PORTS = {"down": BASE, "up1": BASE + 1, "up2": BASE + 2}
GW_PORT = BASE + 10
HELLO = [{"role": "user", "content": "Say hello"}]
MOCK_KEY = "sk-bench-mock-" + "k" * 24

CATALOG = f"""
providers:
  - slug: mock-down
    name: Mock Down
    api_format: openai
    base_url: "http://127.0.0.1:{PORTS["down"]}/v1"
    api_key_env: FAILOVER_MOCK_KEY
    timeouts: {{connect: 2, first_byte: 10, between_chunks: 10, total: 30}}
  - slug: mock-up1
    name: Mock Up 1
    api_format: openai
    base_url: "http://127.0.0.1:{PORTS["up1"]}/v1"
    api_key_env: FAILOVER_MOCK_KEY
    timeouts: {{connect: 2, first_byte: 10, between_chunks: 10, total: 30}}
  - slug: mock-up2
    name: Mock Up 2
    api_format: openai
    base_url: "http://127.0.0.1:{PORTS["up2"]}/v1"
    api_key_env: FAILOVER_MOCK_KEY
    timeouts: {{connect: 2, first_byte: 10, between_chunks: 10, total: 30}}
models:
  - slug: {MODEL}
    name: "Bench: failover model"
    context_length: 32768
    endpoints:
      - provider: mock-down
        provider_model_id: bench-model
        pricing: {{prompt: "0.10", completion: "0.40"}}
      - provider: mock-up1
        provider_model_id: bench-model
        pricing: {{prompt: "0.12", completion: "0.48"}}
      - provider: mock-up2
        provider_model_id: bench-model
        pricing: {{prompt: "0.15", completion: "0.60"}}
"""


def log(msg: str) -> None:
    print(f"[failover {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def env() -> dict[str, str]:
    from cryptography.fernet import Fernet

    out = dict(os.environ)
    out.update(
        DATABASE_URL=DB,
        REDIS_URL=REDIS,
        DEBUG="0",
        SECRET_KEY="bench-secret-" + os.urandom(24).hex(),
        SWITCHYARD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        SECURE_SSL_REDIRECT="0",
        # The bench Redis is a throwaway (no append-only file), which full mode refuses by default.
        SWITCHYARD_REDIS_ALLOW_VOLATILE="1",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DJANGO_SETTINGS_MODULE="switchyard.settings",
        FAILOVER_MOCK_KEY=MOCK_KEY,
    )
    out.pop("SWITCHYARD_TESTING", None)
    return out


def start_mock(name: str, logdir: Path, kind: str = "ok") -> Any:
    port = PORTS[name]
    if kind == "503":
        spec = f"fail_503:latency_ms={LATENCY_MS:g}"
        cmd = [PY, "-m", "tests.fakes.openai_upstream", "--port", str(port), "--default", spec]
        ready = f"http://127.0.0.1:{port}/v1/models"
    else:
        cmd = [PY, str(HERE / "mock_upstream.py"), "--port", str(port), "--latency-ms", str(LATENCY_MS)]
        ready = f"http://127.0.0.1:{port}/health"
    proc = harness.start(cmd, logdir / f"mock-{name}.log")
    harness.wait_ready(ready, MOCK_KEY, proc, timeout=30)
    return proc


def start_gateway(e: dict[str, str], logdir: Path, **extra: str) -> Any:
    cmd = [
        str(harness.VENV_BIN / "uvicorn"),
        "switchyard.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(GW_PORT),
        "--workers",
        "2",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    proc = harness.start(cmd, logdir / "gateway.log", {**e, **extra})
    harness.wait_ready(f"http://127.0.0.1:{GW_PORT}/api/v1/models", "", proc, timeout=90)
    return proc


def setup(e: dict[str, str], logdir: Path) -> str:
    harness.ensure_database(DB)
    import redis

    redis.Redis.from_url(REDIS, socket_connect_timeout=2).flushdb()
    harness.manage(e, "migrate", "--noinput", "-v0")
    path = logdir / "catalog.yaml"
    path.write_text(CATALOG)
    harness.manage(e, "load_catalog", str(path))
    slug = "failover-" + time.strftime("%Y%m%d-%H%M%S")
    out = harness.manage(e, "create_org", slug, "--owner", f"{slug}@example.com", "--credits", "100000")
    return out.stdout.strip().splitlines()[-1]


# ---- load ----------------------------------------------------------------------------------------


async def load(
    key: str, n: int, c: int, provider: dict[str, Any] | None = None, min_seconds: float = 0
) -> dict[str, Any]:
    """n requests (and for at least min_seconds) from c closed-loop clients; latency per request,
    statuses and who served."""
    url = f"http://127.0.0.1:{GW_PORT}/api/v1/chat/completions"
    body: dict[str, Any] = {"model": MODEL, "messages": HELLO}
    if provider:
        body["provider"] = provider
    payload = json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    served: dict[str, int] = {}
    left = n
    until = time.monotonic() + min_seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal left
        while left > 0 or time.monotonic() < until:
            left -= 1
            t0 = time.perf_counter()
            async with session.post(url, data=payload, headers=headers) as resp:
                data = await resp.read()
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status == 200:
                    who = json.loads(data).get("provider", "?")
                    served[who] = served.get(who, 0) + 1

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=c)) as session:
        await asyncio.gather(*(client(session) for _ in range(c)))
    return summary(latencies, statuses, served)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(latencies: list[float], statuses: dict[int, int], served: dict[str, int]) -> dict[str, Any]:
    total = sum(statuses.values())
    return {
        "n": total,
        "success": round(100.0 * statuses.get(200, 0) / total, 2) if total else 0.0,
        "p50": round(pct(latencies, 50), 1),
        "p99": round(pct(latencies, 99), 1),
        "mean": round(statistics.fmean(latencies), 1),
        "statuses": statuses,
        "served": served,
    }


def circuit(name: str = "mock-down") -> str:
    status, raw = harness.http(f"http://127.0.0.1:{GW_PORT}/api/v1/models/{MODEL}/endpoints")
    if status != 200:
        return "?"
    return next((e["circuit"] for e in json.loads(raw)["data"]["endpoints"] if e["tag"] == name), "?")


async def warm_until_open(key: str) -> dict[str, Any]:
    """Default-routed requests until the down endpoint's circuit is open (checked every 10)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    served: dict[str, int] = {}
    for _ in range(200):
        part = await load(key, 10, 2)
        for code, count in part["statuses"].items():
            statuses[code] = statuses.get(code, 0) + count
        for who, count in part["served"].items():
            served[who] = served.get(who, 0) + count
        latencies += [part["mean"]] * part["n"]
        if circuit() == "open":
            break
    return {**summary(latencies, statuses, served), "circuit": circuit()}


async def failed_attempt_ms(kind: str, samples: int = 50) -> float:
    """The time one failed attempt at the down endpoint takes, measured directly (median)."""
    url = f"http://127.0.0.1:{PORTS['down']}/v1/chat/completions"
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(samples):
            t0 = time.perf_counter()
            try:
                body = {"model": "bench-model", "messages": HELLO}
                headers = {"Authorization": f"Bearer {MOCK_KEY}"}
                async with session.post(url, json=body, headers=headers) as resp:
                    await resp.read()
            except aiohttp.ClientError:
                pass
            times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 1)


# ---- the run ---------------------------------------------------------------------------------------


def forget_health() -> None:
    """Each run starts with no circuit, recent-failure or speed history from the previous one."""
    import redis

    redis.Redis.from_url(REDIS, socket_connect_timeout=2).delete("sy:cb", "sy:hp")


def run_kind(kind: str, key: str, e: dict[str, str], logdir: Path) -> dict[str, Any]:
    forget_health()
    mocks = {name: start_mock(name, logdir) for name in PORTS}
    gateway = start_gateway(e, logdir)
    try:
        asyncio.run(load(key, 200, C))  # warm-up, discarded
        healthy = asyncio.run(load(key, N, C))
        log(f"[{kind}] healthy: {healthy}")
        harness.stop(mocks["down"])
        if kind == "503":
            mocks["down"] = start_mock("down", logdir, kind="503")
        warm = asyncio.run(warm_until_open(key))
        log(f"[{kind}] until the circuit opened: {warm}")
        # At least one cooldown long, so the half-open probes (one per worker every 5 s) are in it.
        outage = asyncio.run(load(key, N, C, min_seconds=OUTAGE_SECONDS))
        log(f"[{kind}] outage, circuit {circuit()}: {outage}")
    finally:
        harness.stop(gateway)
    # Failover cost: breaker off (and the circuit the outage opened forgotten), so every pinned
    # request tries the down endpoint first.
    forget_health()
    gateway = start_gateway(e, logdir, SWITCHYARD_BREAKER_THRESHOLD="1000000000")
    try:
        asyncio.run(load(key, 50, 1, {"order": ["mock-up1"]}))
        direct = asyncio.run(load(key, 300, 1, {"order": ["mock-up1"], "allow_fallbacks": False}))
        failover = asyncio.run(load(key, 300, 1, {"order": ["mock-down", "mock-up1"]}))
        attempt = asyncio.run(failed_attempt_ms(kind))
    finally:
        harness.stop(gateway)
        for proc in mocks.values():
            harness.stop(proc)
    log(f"[{kind}] c=1 pinned to an up endpoint: {direct}")
    log(f"[{kind}] c=1 pinned [down, up] (one failover each): {failover}")
    return {
        "kind": kind,
        "healthy": healthy,
        "warm": warm,
        "outage": outage,
        "direct": direct,
        "failover": failover,
        "failed_attempt_ms": attempt,
    }


def report(results: list[dict[str, Any]]) -> None:
    print()
    print(f"Failover benchmark: {N} requests per phase, {C} clients, mocks at {LATENCY_MS:g} ms, 2 workers")
    print()
    print("| outage | phase | requests | success | p50 ms | p99 ms | p99 / healthy p99 |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        base = r["healthy"]["p99"]
        for phase, label in (("healthy", "all up"), ("warm", "until open"), ("outage", "one down, open")):
            s = r[phase]
            ratio = f"{s['p99'] / base:.2f}" if phase != "warm" else "-"
            p50 = s["p50"] if phase != "warm" else "-"
            p99 = s["p99"] if phase != "warm" else "-"
            print(f"| {r['kind']} | {label} | {s['n']} | {s['success']}% | {p50} | {p99} | {ratio} |")
    print()
    print("| outage | c=1 p50 direct | c=1 p50 with one failover | added | one failed attempt alone |")
    print("|---|---|---|---|---|")
    for r in results:
        added = round(r["failover"]["p50"] - r["direct"]["p50"], 1)
        print(
            f"| {r['kind']} | {r['direct']['p50']} ms | {r['failover']['p50']} ms | {added} ms "
            f"| {r['failed_attempt_ms']} ms |"
        )
    print()
    print(json.dumps(results, indent=1))


def main() -> None:
    logdir = ROOT / "bench" / "results" / "failover"  # ignored by git (.gitignore)
    logdir.mkdir(parents=True, exist_ok=True)
    e = env()
    try:
        key = setup(e, logdir)
        results = [run_kind(kind, key, e, logdir) for kind in KINDS]
    finally:
        harness.cleanup()
    report(results)


if __name__ == "__main__":
    main()
