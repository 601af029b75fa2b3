"""Python load generators for `make bench` (aiohttp, uvloop when available). Prints one JSON line.

    loadgen.py stream --url URL --key K --model M -c 32 -n 1000
        N streaming chat requests at concurrency C. Every stream must have HTTP 200, a usage chunk
        and end with `data: [DONE]`; TTFC = time to the first `data:` bytes.
    loadgen.py plain --url URL --key K --model M -c 64 [--duration 5 | -n 500]
        Closed-loop non-streaming POSTs (the fallback when wrk is not installed, and the exact-count
        phase of the books check: with -n every request is waited for, so the count is exact).

Workers are grouped: each group of --group workers (default 8) shares one aiohttp session with a
connection limit equal to the group size, so no single pool serves all C connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def summary(lat: list[float], elapsed: float, **extra: object) -> dict[str, object]:
    ms = [x * 1000 for x in lat]
    return {
        "ok": len(lat),
        "seconds": round(elapsed, 3),
        "rps": round(len(lat) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(pct(ms, 50), 3),
        "p90_ms": round(pct(ms, 90), 3),
        "p99_ms": round(pct(ms, 99), 3),
        **extra,
    }


def _sessions(c: int, group: int) -> list[aiohttp.ClientSession]:
    out = []
    for start in range(0, c, group):
        size = min(group, c - start)
        out.append(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=size, force_close=False),
                timeout=aiohttp.ClientTimeout(total=60),
            )
        )
    return out


async def run_stream(a: argparse.Namespace) -> dict[str, object]:
    body = json.dumps(
        {
            "model": a.model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 32,
            "messages": [{"role": "user", "content": "Say hello in five words."}],
        }
    ).encode()
    headers = {"Authorization": f"Bearer {a.key}", "Content-Type": "application/json"}
    sessions = _sessions(a.c, a.group)
    remaining = a.n
    lat: list[float] = []
    ttfc: list[float] = []
    failures: dict[str, int] = {}
    events_seen: list[int] = []

    def fail(why: str) -> None:
        failures[why] = failures.get(why, 0) + 1

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            first = None
            buf = bytearray()
            try:
                async with session.post(a.url, data=body, headers=headers) as resp:
                    status = resp.status
                    async for chunk in resp.content.iter_any():
                        if first is None and b"data:" in chunk:
                            first = time.perf_counter()
                        buf += chunk
            except Exception as exc:
                fail(type(exc).__name__)
                continue
            end = time.perf_counter()
            if status != 200:
                fail(f"http_{status}")
            elif b'"usage"' not in buf or b'"total_tokens"' not in buf:
                fail("no_usage_chunk")
            elif not bytes(buf).rstrip().endswith(b"data: [DONE]"):
                fail("no_done")
            else:
                lat.append(end - t0)
                ttfc.append((first or end) - t0)
                events_seen.append(buf.count(b"data: "))

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker(sessions[i // a.group]) for i in range(a.c)))
    finally:
        for s in sessions:
            await s.close()
    elapsed = time.perf_counter() - t0
    ms = [x * 1000 for x in ttfc]
    return summary(
        lat,
        elapsed,
        mode="stream",
        c=a.c,
        sent=a.n,
        errors=sum(failures.values()),
        failures=failures,
        ttfc_p50_ms=round(pct(ms, 50), 3),
        ttfc_p99_ms=round(pct(ms, 99), 3),
        events_min=min(events_seen) if events_seen else 0,
    )


async def run_plain(a: argparse.Namespace) -> dict[str, object]:
    body = json.dumps(
        {
            "model": a.model,
            "max_tokens": 32,
            "messages": [{"role": "user", "content": "Say hello in five words."}],
        }
    ).encode()
    headers = {"Authorization": f"Bearer {a.key}", "Content-Type": "application/json"}
    sessions = _sessions(a.c, a.group)
    lat: list[float] = []
    failures: dict[str, int] = {}
    remaining = a.n if a.n else None
    deadline = time.perf_counter() + a.duration if not a.n else float("inf")
    sent = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining, sent
        while time.perf_counter() < deadline:
            if remaining is not None:
                if remaining <= 0:
                    return
                remaining -= 1
            sent += 1
            t0 = time.perf_counter()
            try:
                async with session.post(a.url, data=body, headers=headers) as resp:
                    raw = await resp.read()
                    status = resp.status
            except Exception as exc:
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                continue
            if status != 200 or b'"total_tokens"' not in raw:
                key = f"http_{status}"
                failures[key] = failures.get(key, 0) + 1
            else:
                lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker(sessions[i // a.group]) for i in range(a.c)))
    finally:
        for s in sessions:
            await s.close()
    return summary(
        lat,
        time.perf_counter() - t0,
        mode="plain",
        c=a.c,
        sent=sent,
        errors=sum(failures.values()),
        failures=failures,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["stream", "plain"])
    ap.add_argument("--url", required=True, help="full chat/completions URL")
    ap.add_argument("--key", default="sk-anything")
    ap.add_argument("--model", default="bench/bench-model")
    ap.add_argument("-c", type=int, default=1)
    ap.add_argument("-n", type=int, default=0, help="number of requests (stream: required)")
    ap.add_argument("--duration", type=float, default=5.0, help="plain mode without -n")
    ap.add_argument("--group", type=int, default=8, help="workers per aiohttp session")
    a = ap.parse_args()
    if a.mode == "stream" and a.n <= 0:
        ap.error("stream mode needs -n")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run_stream(a) if a.mode == "stream" else run_plain(a))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
