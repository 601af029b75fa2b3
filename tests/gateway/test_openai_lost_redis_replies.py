"""Redis replies that never arrive, on the hot path's two calls. The live server's hot-path Redis
connection goes through a fault proxy that keeps a chosen call's reply back (Redis still runs the call).

- The settlement: it is handed to Redis before the response's last bytes, and the response does not
  wait for its reply (README "Settlement before the last byte"). The client gets its answer and finds
  its credit settled and its usage queued; when the reply is then lost with the connection, the
  settlement is retried, and the books show every request charged exactly once.
- The hold: Redis placed it but the gateway never heard so, and answered 503. The hold is released by
  id, instead of keeping the credit reserved until the reaper's TTL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
from django.conf import settings

from billing.holds import HOLDS_ZSET, USAGE_STREAM, key_hash_name
from routing.gateway import settlement
from routing.models import Generation
from switchyard import fastredis
from switchyard.shared import detached_running
from tests.conftest import flush_usage
from tests.factories import make_key
from tests.faults.proxy import FaultProxy
from tests.faults.traffic import assert_books, wait_for
from tests.gateway.openai_env import *  # noqa: F403 - the shared fixtures
from tests.gateway.openai_env import body, open_holds

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL, reason="full mode only: embedded mode settles in-process"),
]


def _on_server_loop(live, coro):  # type: ignore[no-untyped-def]
    return asyncio.run_coroutine_threadsafe(coro, live.loop).result(10)


async def _hot_path_redis(url: str | None) -> None:
    """Replace the server loop's FastRedis: one to `url`, or (None) the default, created on next use."""
    loop = asyncio.get_running_loop()
    old = fastredis._clients.pop(id(loop), None)
    if old is not None:
        old[1].close()
    if url is not None:
        fastredis._clients[id(loop)] = (loop, fastredis.FastRedis(url, loop))


@pytest.fixture
def proxy(live) -> Iterator[FaultProxy]:  # type: ignore[no-untyped-def]
    target = urlparse(settings.REDIS_URL)
    proxy = FaultProxy(target.hostname or "127.0.0.1", target.port or 6379).start()
    _on_server_loop(live, _hot_path_redis(proxy.url("redis", target.path)))
    try:
        yield proxy
    finally:
        proxy.release()
        _on_server_loop(live, _hot_path_redis(None))
        proxy.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_the_answer_does_not_wait_for_the_settlements_reply(raw, org, proxy, monkeypatch, stream):
    # Were the answer to wait for the reply, it would wait this long (the request times out first).
    monkeypatch.setattr(settlement, "SETTLE_BEFORE_REPLY_SECONDS", 60.0)
    warm = raw.post("/chat/completions", json=body("fake-a", stream=stream))  # connected, scripts sent
    assert warm.status_code == 200 and proxy.accepted >= 1  # the hot path goes through the proxy

    # Only a settlement names the usage stream, and only this request uses a second key: its
    # settlement's reply (and every later one on that connection) is kept back.
    other_key, other = make_key(org)
    proxy.withhold_replies_after(USAGE_STREAM.encode(), key_hash_name(other_key.pk).encode() + b"\r\n")
    resp = raw.post(
        "/chat/completions",
        json=body("fake-a", stream=stream),
        headers={"Authorization": f"Bearer {other}"},
        timeout=10,
    )
    assert resp.status_code == 200
    assert resp.text.endswith("data: [DONE]\n\n") if stream else resp.json()["usage"]["cost"] > 0
    wait_for(proxy.withheld.is_set, 5, "the settlement's reply kept back")
    # Redis has run the settlement: nothing is held, and the usage event is queued.
    assert open_holds(org.pk) == 0
    flush_usage()
    gen_id = resp.headers["x-generation-id"]
    assert Generation.objects.filter(pk=gen_id, status="success").exists()

    # The connection dies before the reply gets through: the settlement is retried on a new one, and
    # the retry (the Lua call is idempotent on the generation id) charges nothing twice.
    proxy.cut()
    wait_for(lambda: proxy.accepted >= 2 and not detached_running(), 10, "the settlement retried")
    flush_usage()
    assert_books(org, "5", {warm.headers["x-generation-id"], gen_id})
    assert open_holds(org.pk) == 0


def test_a_hold_whose_reply_is_lost_is_released(raw, org, proxy, monkeypatch):
    monkeypatch.setattr(fastredis, "REPLY_TIMEOUT", 0.5)
    warm = raw.post("/chat/completions", json=body("fake-a"))
    assert warm.status_code == 200

    # The first call naming the holds index and a second key is that key's first request's hold:
    # Redis places it, the gateway never hears back, gives up after REPLY_TIMEOUT and answers 503.
    other_key, other = make_key(org)
    proxy.withhold_replies_after(HOLDS_ZSET.encode(), key_hash_name(other_key.pk).encode() + b"\r\n")
    refused = raw.post("/chat/completions", json=body("fake-a"), headers={"Authorization": f"Bearer {other}"})
    assert refused.status_code == 503 and proxy.withheld.is_set()
    wait_for(lambda: open_holds(org.pk) == 0 and not detached_running(), 10, "the lost hold released")

    again = raw.post("/chat/completions", json=body("fake-a"))
    assert again.status_code == 200
    # Its settlement was handed to the proxy before the answer; wait until Redis has acknowledged it
    # (the proxy is one more hop, which a loaded box can make slow) before draining the usage stream.
    wait_for(lambda: not detached_running(), 10, "the settlement acknowledged")
    flush_usage()
    assert_books(org, "5", {warm.headers["x-generation-id"], again.headers["x-generation-id"]})
