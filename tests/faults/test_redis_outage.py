"""Redis becomes unreachable in the middle of traffic (refused, then hanging), then returns. The live
server's Redis connection goes through a fault proxy; the Celery worker drains from Redis directly.

Policy (README "Failure policy"): no request hangs (a clean 503 with Retry-After, or a success), every
request answered 200 is charged exactly once (settlement retries until Redis returns and is idempotent),
nothing is charged for a refused request, and service and the books recover when Redis returns."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.conf import settings

from tests.conftest import flush_usage
from tests.factories import make_key, make_org
from tests.faults.proxy import FaultProxy
from tests.faults.traffic import Traffic, assert_books, assert_clean_answers, chat, wait_for
from tests.production.procs import NO_HOLDS, Served, open_holds

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.REDIS_URL,
        reason="full mode only: there is no Redis to lose in embedded mode (set DATABASE_URL and REDIS_URL)",
    ),
]


@pytest.fixture
def redis_proxy():
    url = urlparse(settings.REDIS_URL)
    proxy = FaultProxy(url.hostname or "127.0.0.1", url.port or 6379).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def served(sim_catalog, celery_worker_process, redis_proxy):
    db = urlparse(settings.REDIS_URL).path
    server = Served(workers=1, REDIS_URL=redis_proxy.url("redis", db))
    try:
        yield server.wait_ready()
    finally:
        print(server.output()[-6000:])  # shown when the test fails
        Path("/tmp/j_serve.log").write_text(server.output())
        server.stop()


def test_redis_outage_mid_traffic(served, redis_proxy):
    org = make_org(credits="5")
    key = make_key(org)[1]
    before = chat(served.api, key, stream=False)
    assert before.status == 200

    with Traffic(served.api, key, threads=4) as traffic:
        time.sleep(1.5)
        redis_proxy.down("refuse")  # Redis stopped: connections reset, new ones refused
        time.sleep(3)
        redis_proxy.down("hang")  # Redis host gone silent: connections accepted, never answered
        time.sleep(5)
        redis_proxy.up()
        time.sleep(3)
    results = traffic.results

    assert_clean_answers(results)
    statuses = [r.status for r in results]
    assert statuses.count(503) > 0, "the outage was never seen"
    assert statuses.count(200) > 0
    # Recovery: requests succeed again.
    after = [chat(served.api, key, stream=s) for s in (False, True, False)]
    assert [r.status for r in after] == [200, 200, 200]

    from routing.models import Generation

    answered = {r.generation for r in [before, *results, *after] if r.status == 200}
    assert None not in answered
    wait_for(lambda: Generation.objects.filter(organization=org).count() >= len(answered), 30, "usage landed")
    flush_usage()
    wait_for(lambda: open_holds(org.id) == NO_HOLDS, 10, "holds settled")
    assert_books(org, "5", answered)  # type: ignore[arg-type]
