"""switchyard/retry.py: the one retry-with-deadline policy, against a redis-server of the test's own that
is down and comes back, and real coroutines that keep failing."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from switchyard.retry import MAX_DELAY, GaveUp, backoff, retry
from tests.faults.redis_server import RedisServer

needs_redis_server = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


def test_backoff_doubles_with_jitter_and_stays_bounded() -> None:
    lowest = [backoff(n, rng=lambda: 0.0) for n in range(1, 10)]
    highest = [backoff(n, rng=lambda: 1.0) for n in range(1, 10)]
    assert highest[:5] == [0.2, 0.4, 0.8, 1.6, 3.2]
    assert highest[5:] == [MAX_DELAY] * 4
    assert lowest == [h / 2 for h in highest]
    assert backoff(10_000) <= MAX_DELAY  # no overflow however long an outage lasts
    drawn = {backoff(3) for _ in range(50)}
    assert len(drawn) > 1 and all(0.4 <= d <= 0.8 for d in drawn)


@needs_redis_server
async def test_a_call_to_a_stopped_redis_succeeds_once_it_is_back() -> None:
    server = RedisServer().start()
    # redis-py's own retries off: this test is about ours
    client = redis.asyncio.Redis(
        port=server.port, socket_connect_timeout=1, socket_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    attempts = 0

    async def incr() -> int:
        nonlocal attempts
        attempts += 1
        return int(await client.incr("retried"))

    try:
        server.kill()

        async def restart_later() -> None:
            await asyncio.sleep(1.5)
            await asyncio.to_thread(server.start)

        restarting = asyncio.create_task(restart_later())
        started = time.monotonic()
        assert await retry(incr, what="incr", retry_on=(RedisConnectionError,), seconds=20) == 1
        assert 1.5 <= time.monotonic() - started < 10
        assert attempts >= 3
        await restarting
    finally:
        await client.aclose()  # type: ignore[attr-defined]  # the stubs predate redis-py 5
        server.stop()


async def test_gives_up_at_the_deadline_with_the_last_failure() -> None:
    tries: list[float] = []

    async def failing() -> None:
        tries.append(time.monotonic())
        raise OSError(f"try {len(tries)}")

    started = time.monotonic()
    with pytest.raises(GaveUp) as gave_up:
        await retry(failing, what="the release", retry_on=(OSError,), seconds=1.0)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 1.5  # the last sleep is cut to the deadline, not a whole backoff past it
    assert tries[-1] - started >= 1.0  # a last try made at the deadline
    assert gave_up.value.attempts == len(tries) >= 3
    assert str(gave_up.value.__cause__) == f"try {len(tries)}"


async def test_other_errors_and_cancellation_are_not_retried() -> None:
    tries = 0

    async def wrong() -> None:
        nonlocal tries
        tries += 1
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        await retry(wrong, what="wrong", retry_on=(OSError,), seconds=5)
    assert tries == 1

    async def flaky() -> None:
        raise OSError("down")

    task = asyncio.create_task(retry(flaky, what="flaky", retry_on=(OSError,), seconds=30))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_default_deadline_is_the_settlement_setting(settings) -> None:
    settings.SWITCHYARD_SETTLE_RETRY_SECONDS = 0
    tries = 0

    async def failing() -> None:
        nonlocal tries
        tries += 1
        raise OSError("down")

    with pytest.raises(GaveUp):
        await retry(failing, what="once", retry_on=(OSError,))
    assert tries == 1
