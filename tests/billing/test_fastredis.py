"""switchyard/fastredis.py: the hot path's pipelined Redis connection, against the real Redis (full mode)
and a silent TCP server (a hung Redis host)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from switchyard import fastredis
from switchyard.fastredis import FastRedis, Script

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="full mode only: needs Redis")


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_concurrent_calls_get_their_own_replies_in_order() -> None:
    echo = Script("return {KEYS[1], ARGV[1]}")

    async def main() -> list[object]:
        client = FastRedis(settings.REDIS_URL, asyncio.get_running_loop())
        try:
            return await asyncio.gather(*(client.evalsha(echo, [f"k{i}"], [str(i)]) for i in range(200)))
        finally:
            client.close()

    replies = run(main())
    assert replies == [[f"k{i}".encode(), str(i).encode()] for i in range(200)]


def test_a_flushed_script_cache_falls_back_to_eval() -> None:
    script = Script("return 'fresh-' .. ARGV[1]")

    async def main() -> tuple[object, object]:
        client = FastRedis(settings.REDIS_URL, asyncio.get_running_loop())
        try:
            first = await client.evalsha(script, [], ["a"])
            await client.execute(b"SCRIPT", b"FLUSH")
            second = await client.evalsha(script, [], ["b"])  # NOSCRIPT, then EVAL
            return first, second
        finally:
            client.close()

    assert run(main()) == (b"fresh-a", b"fresh-b")


def test_script_errors_are_response_errors_and_the_connection_stays_usable() -> None:
    bad = Script("return redis.call('INCR', KEYS[1], 'not', 'valid')")

    async def main() -> object:
        client = FastRedis(settings.REDIS_URL, asyncio.get_running_loop())
        try:
            with pytest.raises(ResponseError):
                await client.evalsha(bad, ["sy:test:fastredis"], [])
            return await client.execute(b"PING")
        finally:
            client.close()

    assert run(main()) == b"PONG"


def test_a_dropped_connection_fails_its_callers_and_the_next_call_reconnects() -> None:
    async def main() -> object:
        client = FastRedis(settings.REDIS_URL, asyncio.get_running_loop())
        try:
            await client.execute(b"PING")
            name = f"sy-fastredis-test-{id(client)}"
            await client.execute(b"CLIENT", b"SETNAME", name)
            # Another connection kills ours while a blocking call waits on it.
            killer = FastRedis(settings.REDIS_URL, asyncio.get_running_loop())
            waiting = asyncio.ensure_future(client.execute(b"BLPOP", b"sy:test:never", b"1"))
            await asyncio.sleep(0.05)
            listing = await killer.execute(b"CLIENT", b"LIST")
            ids = [
                line.split(b" ")[0].split(b"=")[1]
                for line in listing.splitlines()
                if f"name={name} ".encode() in line
            ]
            await killer.execute(b"CLIENT", b"KILL", b"ID", ids[0])
            killer.close()
            with pytest.raises(RedisConnectionError):
                await waiting
            return await client.execute(b"PING")  # a fresh connection
        finally:
            client.close()

    assert run(main()) == b"PONG"


def test_a_silent_server_times_out_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastredis, "REPLY_TIMEOUT", 0.3)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts (in the kernel's backlog) and never answers
    port = listener.getsockname()[1]

    async def main() -> float:
        loop = asyncio.get_running_loop()
        client = FastRedis(f"redis://127.0.0.1:{port}/0", loop)
        began = loop.time()
        try:
            with pytest.raises(RedisTimeoutError):
                await client.execute(b"PING")
            return loop.time() - began
        finally:
            client.close()

    try:
        waited = run(main())
    finally:
        listener.close()
    assert 0.25 <= waited < 2.0


def test_a_refused_connection_is_a_connection_error() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now

    async def main() -> None:
        client = FastRedis(f"redis://127.0.0.1:{port}/0", asyncio.get_running_loop())
        with pytest.raises(RedisConnectionError):
            await client.execute(b"PING")

    run(main())


def test_one_client_per_event_loop() -> None:
    async def grab() -> FastRedis:
        return fastredis.fast_redis()

    first, second = run(grab()), run(grab())
    assert first is not second
