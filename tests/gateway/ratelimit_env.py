"""Shared pieces of the rate-limit and input-limit tests: a simulated catalog, plain HTTP helpers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

CATALOG = Path(__file__).parent / "data" / "ratelimit_catalog.yaml"
HELLO = [{"role": "user", "content": "Say hello."}]
MINUTE = 60.0


@pytest.fixture
def rl_catalog(transactional_db: Any) -> None:
    from routing.catalog.loader import catalog_load
    from routing.catalog.snapshot import catalog

    catalog_load([CATALOG])
    catalog.clear()


def body(model: str = "rl/paid", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": HELLO, "max_tokens": 16, **extra}


def post(api: str, secret: str, payload: dict[str, Any], path: str = "/chat/completions") -> httpx.Response:
    return httpx.post(f"{api}{path}", json=payload, headers={"Authorization": f"Bearer {secret}"}, timeout=30)


def burst(api: str, secrets: list[str], payload: dict[str, Any]) -> list[int]:
    """Send one request per secret, all at once; the statuses in order."""

    async def run() -> list[int]:
        limits = httpx.Limits(max_connections=len(secrets), max_keepalive_connections=len(secrets))
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:

            async def one(secret: str) -> int:
                r = await client.post(
                    f"{api}/chat/completions", json=payload, headers={"Authorization": f"Bearer {secret}"}
                )
                if r.status_code == 429:
                    assert_rate_limited(r)
                else:
                    assert r.status_code == 200, r.text
                return r.status_code

            return await asyncio.gather(*(one(s) for s in secrets))

    return asyncio.run(run())


def assert_rate_limited(r: httpx.Response, name: str | None = None) -> dict[str, Any]:
    """A 429 in the documented error shape with Retry-After and the X-RateLimit-* headers."""
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["code"] == 429 and "Rate limit exceeded" in error["message"]
    retry = int(r.headers["retry-after"])
    assert retry >= 1 and error["metadata"]["retry_after"] == retry
    assert int(r.headers["x-ratelimit-limit"]) == error["metadata"]["limit"]
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert int(r.headers["x-ratelimit-reset"]) > time.time() * 1000
    if name is not None:
        assert error["metadata"]["rate_limit"] == name, error
    return error


def allowed_within(limit: int, per_seconds: float, elapsed: float) -> int:
    """The most a GCRA bucket of `limit` per `per_seconds` can admit in `elapsed` seconds from full."""
    return limit + int(elapsed * limit / per_seconds)
