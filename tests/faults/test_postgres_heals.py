"""A web process that lived through a PostgreSQL outage serves keys it has never seen once PostgreSQL
is back. The web process reaches PostgreSQL through a fault proxy that cuts every open connection
and refuses new ones, then lets them through again; Redis is a redis-server of this test's own.

Policy (docs/failure-policy.md "PostgreSQL unreachable"): meanwhile a request whose key is not cached
answers a clean 503 and /readyz fails; afterwards every hot-path database call (key lookup, BYOK
keys, ...) replaces its dead connection, so the next key-cache miss is served."""

from __future__ import annotations

import httpx
import pytest
from django.conf import settings

from billing.holds import USAGE_STREAM
from switchyard.shared import sync_redis
from tests.factories import make_key, make_org
from tests.faults.proxy import FaultProxy
from tests.faults.redis_server import RedisServer, pointed_at
from tests.faults.traffic import assert_books, assert_clean_answers, chat, wait_for
from tests.faults.workers import Worker
from tests.production.procs import Served

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.REDIS_URL,
        reason="full mode only: embedded mode keeps everything in one SQLite file (set DATABASE_URL and REDIS_URL)",
    ),
]


@pytest.fixture
def stack(sim_catalog):
    db = settings.DATABASES["default"]
    proxy = FaultProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)).start()
    redis_server = RedisServer().start()
    url = proxy.url("postgres", f"/{db['NAME']}", user=db["USER"])
    server = Served(workers=1, DATABASE_URL=url, REDIS_URL=redis_server.url())
    worker = Worker(REDIS_URL=redis_server.url())  # straight to PostgreSQL: only the web process is cut off
    try:
        with pointed_at(redis_server):
            yield server.wait_ready(), proxy
    finally:
        print(server.output()[-6000:], worker.output()[-3000:])  # shown when the test fails
        server.stop()
        worker.stop()
        proxy.stop()
        redis_server.stop()


def _ready(served: Served) -> int:
    try:
        return httpx.get(served.url + "/readyz", timeout=10).status_code
    except httpx.HTTPError:
        return 0


def test_key_cache_miss_served_after_postgres_outage(stack):
    served, pg_proxy = stack
    first_org = make_org(credits="5")
    first = make_key(first_org)[1]
    before = chat(served.api, first, stream=False)  # its key lookup opens the hot path's connection
    assert before.status == 200, before.body

    pg_proxy.down("refuse")  # every open connection cut, new ones refused
    during_org = make_org(credits="5")  # created beside the proxy, straight in PostgreSQL
    during = chat(served.api, make_key(during_org)[1], stream=False)
    assert_clean_answers([during])
    assert during.status == 503
    wait_for(lambda: _ready(served) == 503, 20, "/readyz failing while PostgreSQL is away")

    pg_proxy.up()
    wait_for(lambda: _ready(served) == 200, 20, "/readyz ready again")
    # Keys (and organisations) this process has never seen: each lookup reaches PostgreSQL afresh.
    later_org = make_org(credits="5")
    later = [chat(served.api, make_key(later_org)[1], stream=s) for s in (False, True)]
    assert [r.status for r in later] == [200, 200], [r.body[:300] for r in later]
    again = chat(served.api, make_key(during_org)[1], stream=False)
    assert again.status == 200, again.body

    wait_for(lambda: sync_redis().xlen(USAGE_STREAM) == 0, 60, "usage drained")
    assert_books(first_org, "5", {before.generation})  # type: ignore[arg-type]
    assert_books(later_org, "5", {r.generation for r in later})  # type: ignore[arg-type]
    assert_books(during_org, "5", {again.generation})  # type: ignore[arg-type]
