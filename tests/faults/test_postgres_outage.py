"""PostgreSQL unreachable (connections cut and refused, then hanging) under traffic, then back. The web
process and the Celery worker reach PostgreSQL through a fault proxy; Redis is untouched.

Policy (README "Failure policy"): the hot path keeps answering from memory and Redis (keys, catalog,
holds); anything that needs the database answers a clean 503; usage events wait in the Redis stream
and land once PostgreSQL returns; the books balance afterwards."""

from __future__ import annotations

import time

import httpx
import pytest
from django.conf import settings

from billing.holds import USAGE_STREAM
from switchyard.shared import sync_redis
from tests.factories import make_key, make_org
from tests.faults.proxy import FaultProxy
from tests.faults.traffic import Traffic, assert_books, assert_clean_answers, chat, wait_for
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
def pg_proxy():
    db = settings.DATABASES["default"]
    proxy = FaultProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def stack(sim_catalog, pg_proxy):
    db = settings.DATABASES["default"]
    url = pg_proxy.url("postgres", f"/{db['NAME']}", user=db["USER"])
    server = Served(workers=1, DATABASE_URL=url)
    worker = Worker(DATABASE_URL=url)
    try:
        yield server.wait_ready(), worker
    finally:
        print(server.output()[-4000:], worker.output()[-4000:])  # shown when the test fails
        server.stop()
        worker.stop()


def test_postgres_outage_under_traffic(stack, pg_proxy):
    served, _ = stack
    org = make_org(credits="5")
    key = make_key(org)[1]
    before = chat(served.api, key, stream=False)
    assert before.status == 200

    with Traffic(served.api, key, threads=4) as traffic:
        time.sleep(1.5)
        pg_proxy.down("refuse")
        mark = len(traffic.results)
        # A database-backed API call answers a clean 503 meanwhile (never a 500 or a hang).
        page = httpx.get(served.api + "/credits", headers={"Authorization": f"Bearer {key}"}, timeout=30)
        time.sleep(3)
        pg_proxy.down("hang")
        time.sleep(3)
        during = traffic.results[mark:]
        waiting = sync_redis().xlen(USAGE_STREAM)  # usage of requests answered meanwhile, queued
        pg_proxy.up()
        time.sleep(2)
    results = traffic.results

    assert_clean_answers(results)
    assert page.status_code == 503, page.text
    assert page.json()["error"]["code"] == 503 and page.headers["retry-after"]
    # The hot path kept serving from Redis while PostgreSQL was away.
    assert sum(r.status == 200 for r in during) > 0
    assert waiting > 0
    after = [chat(served.api, key, stream=s) for s in (False, True)]
    assert [r.status for r in after] == [200, 200]

    from routing.models import Generation

    answered = {r.generation for r in [before, *results, *after] if r.status == 200}
    wait_for(lambda: sync_redis().xlen(USAGE_STREAM) == 0, 60, "usage drained after the outage")
    wait_for(lambda: Generation.objects.filter(organization=org).count() >= len(answered), 30, "usage landed")
    assert_books(org, "5", answered)  # type: ignore[arg-type]
