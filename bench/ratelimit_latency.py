"""What rate limiting adds to a request (full mode): prints figures, asserts nothing.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/switchyard_d REDIS_URL=redis://127.0.0.1:6379/4 \
        .venv/bin/python bench/ratelimit_latency.py [N]

1. Redis alone, sequentially, on the hot path's asyncio client: a stand-in for the credit hold's Lua
   call, the same with two and four rate-limit buckets folded in (what the gateway does), and the hold
   followed by a separate rate-limit call (what folding saves).
2. End to end: one uvicorn process serving the simulated model; N sequential non-streaming requests
   alternating between a key with no limit (no Redis call) and a key with generous requests- and
   tokens-per-minute limits (checked inside the hold's Lua call; the tokens charge after the answer,
   off the response path), and a key with only a requests-per-minute limit. The difference of the
   medians is the cost.

The database is migrated and gets a catalog, an organisation and two keys; the Redis DB is only
touched under `sy:` keys (never flushed).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")
os.environ.setdefault("DEBUG", "1")


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * p), len(ordered) - 1)]


def _row(name: str, samples: list[float]) -> str:
    us = [s * 1e6 for s in samples]
    return f"{name:<44} median {statistics.median(us):8.1f} µs   p90 {_pct(us, 0.9):8.1f} µs"


async def redis_alone(n: int) -> None:
    """A stand-in hold script alone, with the rate limits folded in, and with them in a call of their own."""
    from routing.ratelimit import MINUTE_US, fold
    from switchyard.shared import async_redis

    client = async_redis()
    stand_in = "return {1, '0'}"
    hold = client.register_script(stand_in)
    folded = client.register_script(fold(stand_in))
    two = (["sy:rl:bench:k", "sy:rl:bench:o"], ["g", "1000000000", str(MINUTE_US), "1"] * 2 + ["2"])
    four = (
        ["sy:rl:bench:k", "sy:rl:bench:o", "sy:rl:bench:kt", "sy:rl:bench:ot"],
        ["g", "1000000000", str(MINUTE_US), "1"] * 2 + ["g", "1000000000", str(MINUTE_US), "0"] * 2 + ["4"],
    )
    await hold(keys=[], args=[])
    await folded(keys=two[0], args=two[1])
    names = ["hold alone", "hold + 2 buckets, one call", "hold + 4 buckets, one call", "hold, then 2 buckets"]
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(n):
        t = time.perf_counter()
        await hold(keys=[], args=[])
        samples[names[0]].append(time.perf_counter() - t)
        t = time.perf_counter()
        await folded(keys=two[0], args=two[1])
        samples[names[1]].append(time.perf_counter() - t)
        t = time.perf_counter()
        await folded(keys=four[0], args=four[1])
        samples[names[2]].append(time.perf_counter() - t)
        t = time.perf_counter()
        await hold(keys=[], args=[])
        await folded(keys=two[0], args=two[1])
        samples[names[3]].append(time.perf_counter() - t)
    for name, values in samples.items():
        print(_row(f"redis: {name}", values))
    await client.delete(*two[0], *four[0])


def setup() -> tuple[str, str, str]:
    import django

    django.setup()
    from django.core.management import call_command

    from accounts.models import ApiKey
    from tests.factories import make_key, make_org

    call_command("migrate", verbosity=0)
    call_command(
        "load_catalog", str(ROOT / "tests" / "gateway" / "data" / "ratelimit_catalog.yaml"), verbosity=0
    )
    org = make_org(credits="1000", slug=f"bench-rl-{int(time.time())}")
    plain_key, plain = make_key(org, name="bench no limits")
    limited_key, limited = make_key(org, name="bench limited")
    ApiKey.objects.filter(pk=plain_key.pk).update(rate_limit_rpm=0, rate_limit_tpm=0)
    ApiKey.objects.filter(pk=limited_key.pk).update(rate_limit_rpm=10**9, rate_limit_tpm=10**9)
    rpm_key, rpm_only = make_key(org, name="bench rpm only")
    ApiKey.objects.filter(pk=rpm_key.pk).update(rate_limit_rpm=10**9, rate_limit_tpm=0)
    return plain, limited, rpm_only


def end_to_end(n: int, plain: str, limited: str, rpm_only: str) -> None:
    import httpx

    port = 8173
    # Only the limited key's own limits: deployment-wide org defaults would apply to both keys.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_RATE_LIMIT_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "switchyard.asgi:application",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/v1/chat/completions"
        body = {"model": "rl/paid", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(timeout=30) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.get(f"http://127.0.0.1:{port}/api/v1/models")
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            keys = [("no limit", plain), ("key rpm", rpm_only), ("key rpm + tpm", limited)]
            samples: dict[str, list[float]] = {name: [] for name, _ in keys}
            for i in range(n + 50):
                random.shuffle(keys)  # no order effects (a background tokens charge, a GC pause)
                for name, secret in keys:
                    t = time.perf_counter()
                    r = client.post(url, json=body, headers={"Authorization": f"Bearer {secret}"})
                    elapsed = time.perf_counter() - t
                    assert r.status_code == 200, r.text
                    if i >= 50:  # warm-up
                        samples[name].append(elapsed)
            for name, values in samples.items():
                print(_row(f"end to end: {name}", values))
            for name in ("key rpm", "key rpm + tpm"):
                added = statistics.median(samples[name]) - statistics.median(samples["no limit"])
                print(f"{'end to end: added by ' + name + ' (medians)':<44} {added * 1e6:8.1f} µs")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    if not os.environ.get("REDIS_URL") or not os.environ.get("DATABASE_URL"):
        sys.exit("set DATABASE_URL and REDIS_URL (full mode)")
    plain, limited, rpm_only = setup()
    asyncio.run(redis_alone(n))
    end_to_end(max(n // 4, 100), plain, limited, rpm_only)


if __name__ == "__main__":
    main()
