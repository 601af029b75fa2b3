"""Full mode: two web processes (real uvicorn subprocesses) share one set of rate-limit buckets in
Redis, so clients spread over both cannot together exceed a key's, or an organisation's free-tier,
limit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from accounts.models import ApiKey
from switchyard.shared import redis_enabled
from tests.factories import make_key, make_org
from tests.gateway.ratelimit_env import *  # noqa: F403 - the shared fixtures
from tests.gateway.ratelimit_env import MINUTE, allowed_within, assert_rate_limited, body
from tests.live import free_port

ROOT = Path(__file__).resolve().parents[2]
UVICORN = [sys.executable, "-m", "uvicorn", "switchyard.asgi:application", "--log-level", "warning"]
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not redis_enabled(), reason="web processes share limits through Redis (full mode)"),
]


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/v1/models", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def two_servers(live, rl_catalog) -> Iterator[list[str]]:
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DEBUG": "1",
        "SWITCHYARD_TESTING": "1",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
    }
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [*UVICORN, "--port", str(port)],
            cwd=ROOT,
            env=env,
        )
        for port in ports
    ]
    try:
        deadline = time.monotonic() + 40
        while not all(_up(p) for p in ports):
            assert time.monotonic() < deadline, "the web processes did not start"
            assert all(p.poll() is None for p in procs), "a web process died"
            time.sleep(0.1)
        yield [f"http://127.0.0.1:{p}/api/v1" for p in ports]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _spread(apis: list[str], secret: str, payload: dict, n: int) -> list[tuple[int, httpx.Response]]:
    """n concurrent requests, alternating between the web processes: (process index, response)."""

    async def run() -> list[tuple[int, httpx.Response]]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:

            async def one(i: int) -> tuple[int, httpx.Response]:
                r = await client.post(
                    f"{apis[i % 2]}/chat/completions",
                    json=payload,
                    headers={"Authorization": f"Bearer {secret}"},
                )
                return i % 2, r

            return await asyncio.gather(*(one(i) for i in range(n)))

    return asyncio.run(run())


def test_two_processes_share_a_key_limit(two_servers):
    org = make_org(credits="5")
    key, secret = make_key(org)
    ApiKey.objects.filter(pk=key.pk).update(rate_limit_rpm=8)
    started = time.monotonic()
    results = _spread(two_servers, secret, body(), 40)
    elapsed = time.monotonic() - started
    ok = [i for i, r in results if r.status_code == 200]
    refused = [r for _, r in results if r.status_code != 200]
    for r in refused:
        assert_rate_limited(r, "key_rpm")
    # Each process alone would admit 8: together they still admit 8 (plus what refilled meanwhile).
    assert 8 <= len(ok) <= allowed_within(8, MINUTE, elapsed), (len(ok), elapsed)
    assert {i for i, r in results if r.status_code == 429} == {0, 1}  # both processes refused some


def test_two_processes_share_the_free_tier(two_servers, settings):
    # The subprocesses run with the default free tier: 20 a minute per organisation.
    org = make_org(credits=None)
    (_, a), (_, b) = make_key(org), make_key(org)
    started = time.monotonic()
    first = _spread(two_servers, a, body("rl/free"), 15)
    second = _spread(two_servers, b, body("rl/free"), 15)
    elapsed = time.monotonic() - started
    statuses = [r.status_code for _, r in first + second]
    assert 20 <= statuses.count(200) <= allowed_within(20, MINUTE, elapsed), (statuses, elapsed)
    for _, r in first + second:
        if r.status_code != 200:
            assert_rate_limited(r, "free_rpm")
