"""switchyard/lua.py: every registered script runs in a real redis-server of the test's own and its reply
parses into its named outcome; the compositions (rate check + hold, settle + health) behave as one call."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from routing.health import Outcome
from switchyard import lua
from switchyard.lua import (
    AlreadySettled,
    InitReply,
    Insufficient,
    KeyLimit,
    KeyNotLoaded,
    OrgNotLoaded,
    Placed,
    RateRefused,
    Settled,
)
from tests.faults.redis_server import RedisServer

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

ORG, HOLD, KEY = lua.org_hash(1), lua.hold_hash("hold-1"), lua.key_hash_name(5)
MINUTE_US = 60_000_000


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    own = RedisServer().start()
    yield own
    own.stop()


@pytest.fixture
def r(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=server.port)
    client.flushdb()  # the test's own server, nobody else's data
    yield client
    client.close()


def run(r: redis.Redis, script: lua.Lua[Any], keys: list[str], args: list[str]) -> Any:
    return script.reply(r.register_script(script.source)(keys=keys, args=args))


def place(r: redis.Redis, amount: int, *, period: str = "", rate: list[str] | None = None) -> Any:
    keys = [ORG, HOLD, lua.HOLDS_ZSET, KEY]
    args = [str(amount), "2000000000", "1", "hold-1", "5", period, ""]
    if rate is None:
        return run(r, lua.PLACE, keys, args)
    return run(r, lua.PLACE_RATED, [*keys, "sy:rl:test"], [*args, "g", rate[0], str(MINUTE_US), "1", "1"])


def test_every_script_compiles_and_is_run_by_sha(r: redis.Redis) -> None:
    for name, script in lua.REGISTRY.items():
        assert "$" not in script.source, name  # every $NAME was filled
        sha = r.script_load(script.source)
        assert sha.encode() == script.fast.sha, name  # the hot path's EVALSHA finds what was loaded


def test_place_outcomes(r: redis.Redis) -> None:
    assert place(r, 100) == OrgNotLoaded()
    assert run(r, lua.INIT, [ORG], ["1000", "3"]) == InitReply.LOADED
    assert run(r, lua.INIT, [ORG], ["1000", "3"]) == InitReply.ALREADY_LOADED
    assert place(r, 5000) == Insufficient(1000)
    assert place(r, 100, period="d2026-01-01") == KeyNotLoaded()
    assert run(r, lua.KINIT, [KEY], ["d2026-01-01", "50", "0"]) is True
    assert place(r, 100, period="d2026-01-01") == KeyLimit(50)
    assert place(r, 100) == Placed(900)
    assert r.hget(ORG, "held") == b"100"
    assert run(r, lua.REAP, [HOLD, lua.HOLDS_ZSET], ["hold-1"]) is True
    assert run(r, lua.REAP, [HOLD, lua.HOLDS_ZSET], ["hold-1"]) is False
    assert r.hget(ORG, "avail") == b"1000"


def test_a_stale_snapshot_is_refused(r: redis.Redis) -> None:
    r.hset(ORG, mapping={"held": 0, "pending": 0, "aver": 7})
    assert run(r, lua.INIT, [ORG], ["1000", "6"]) == InitReply.STALE_SNAPSHOT
    assert run(r, lua.INIT, [ORG], ["1000", "7"]) == InitReply.LOADED


def test_rate_checked_hold_is_one_call_that_refuses_before_holding(r: redis.Redis) -> None:
    run(r, lua.INIT, [ORG], ["1000", "1"])
    placed = place(r, 100, rate=["2"])
    assert isinstance(placed, Placed) and placed.available == 900
    assert len(placed.rate) == 2 and placed.rate[0] == 1  # one request of two left
    r.delete(HOLD)
    assert isinstance(place(r, 100, rate=["2"]), Placed)
    refused = place(r, 100, rate=["2"])
    assert isinstance(refused, RateRefused) and (refused.bucket, refused.limit) == (1, 2)
    assert 0 < refused.retry_us <= MINUTE_US
    assert r.hget(ORG, "held") == b"200"  # the refused request held nothing


def test_a_hold_that_must_be_mirrored_first_takes_no_rate(r: redis.Redis) -> None:
    assert isinstance(place(r, 100, rate=["1"]), OrgNotLoaded)
    assert not r.exists("sy:rl:test")
    run(r, lua.INIT, [ORG], ["1000", "1"])
    assert isinstance(place(r, 100, rate=["1"]), Placed)  # the one request the bucket allows


def test_settle_records_health_and_a_retry_does_nothing(r: redis.Redis) -> None:
    run(r, lua.INIT, [ORG], ["1000", "1"])
    assert place(r, 100) == Placed(900)
    health = Outcome(endpoint_id=42, ok=True, latency_ms=120, ttft_ms=30, tokens=10, generation_ms=90)
    records = health.args(1_800_000_000)
    assert len(records) == lua.RECORD_FIELDS
    keys = [ORG, HOLD, lua.HOLDS_ZSET, lua.USAGE_STREAM, KEY, lua.pending_generation_key("gen-1")]
    args = ["60", "40", '{"e": 1}', "hold-1", *records]
    settled = run(r, lua.SETTLE, keys, args)
    assert isinstance(settled, Settled) and r.xlen(lua.USAGE_STREAM) == 1
    assert run(r, lua.SETTLE, keys, args) == AlreadySettled()
    assert r.xlen(lua.USAGE_STREAM) == 1
    assert r.hmget(ORG, "held", "pending", "avail") == [b"0", b"60", b"940"]
    assert r.hget(lua.PERF_KEY, "42:lat") == b"120.000"
    assert r.hget(f"{lua.HEALTH_MINUTE_PREFIX}42:{1_800_000_000 // 60}", "ok") == b"1"
    applied = run(r, lua.APPLY, [ORG, lua.USAGE_STREAM], ["2", settled.stream_id, "60", ""])
    assert applied == 1 and r.hmget(ORG, "pending", "bal") == [b"0", b"940"]


def test_unknown_hold_replies_are_an_error() -> None:
    with pytest.raises(ValueError):
        lua.place_reply([7, "0"])


def test_a_balance_lua_writes_in_exponent_form_is_read_exactly() -> None:
    """Lua writes a number of 1e15 picodollars ($1,000) or more as b"1.9999999642e+15": a hold on an
    organisation holding more than $1,000 must still be read as placed (seen in the worker fault test)."""
    placed = lua.place_reply([int(lua.PlaceCode.PLACED), b"1.9999999642e+15"])
    assert placed == lua.Placed(1_999_999_964_200_000, ())
    assert lua.place_reply([int(lua.PlaceCode.INSUFFICIENT), b"2e+15"]) == lua.Insufficient(2 * 10**15)
