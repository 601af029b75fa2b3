"""A hold whose placing call lost its reply is released once Redis is back (billing.holds._release, with
switchyard.retry's policy), against a redis-server of the test's own that is down for a while and
restarts with what it persisted."""

from __future__ import annotations

import asyncio
import shutil

import pytest
import redis

from billing import holds
from billing.holds import HOLDS_ZSET, hold_hash, org_hash
from tests.faults.redis_server import RedisServer, pointed_at

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


def test_a_lost_hold_is_released_when_redis_returns() -> None:
    server = RedisServer(persist=True).start()
    try:
        direct = redis.Redis(port=server.port)
        direct.hset(org_hash(7), mapping={"bal": 1000, "avail": 900, "held": 100, "pending": 0, "initver": 1})
        direct.hset(hold_hash("hold-lost"), mapping={"org": 7, "amount": 100, "lim": "0", "key": ""})
        direct.zadd(HOLDS_ZSET, {"hold-lost": 2_000_000_000})
        direct.close()
        server.kill()

        async def main() -> None:
            releasing = asyncio.get_running_loop().create_task(holds._release("hold-lost"))
            await asyncio.sleep(1.0)
            assert not releasing.done()  # still trying while Redis is down
            await asyncio.to_thread(server.start)
            await asyncio.wait_for(releasing, 15)

        with pointed_at(server):
            asyncio.run(main())
        back = redis.Redis(port=server.port)
        assert back.hgetall(org_hash(7))[b"avail"] == b"1000"
        assert back.hget(org_hash(7), "held") == b"0"
        assert not back.exists(hold_hash("hold-lost")) and back.zcard(HOLDS_ZSET) == 0
        back.close()
    finally:
        server.stop()
