"""Redis restarted empty (killed, then started again with nothing: a cache-only deployment, a replaced
container without its volume). The web process and a Celery worker (with beat) use a redis-server of
this test's own.

Policy (docs/failure-policy.md "Redis that loses its data"): requests in flight across the loss settle
into the empty Redis without hiding the organisation's balance from the hold path (no 402 lock-out),
grants keep working, the books balance exactly, and the loss is detected and reported."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from django.conf import settings
from django.core.management import call_command

from billing.audit import books_audit_run
from billing.holds import USAGE_STREAM
from billing.models import AuditFinding, FindingKind, RedisEpoch
from switchyard.shared import sync_redis
from tests.factories import make_key, make_org
from tests.faults.redis_server import RedisServer, pointed_at
from tests.faults.traffic import Result, Traffic, assert_books, assert_clean_answers, chat, wait_for
from tests.faults.workers import Worker
from tests.production.procs import NO_HOLDS, Served, load_slow_catalog, open_holds

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.REDIS_URL,
        reason="full mode only: there is no Redis to lose in embedded mode (set DATABASE_URL and REDIS_URL)",
    ),
]


@pytest.fixture
def own_redis():
    server = RedisServer(persist=False).start()
    try:
        with pointed_at(server):
            yield server
    finally:
        server.stop()


@pytest.fixture
def stack(sim_catalog, own_redis):
    load_slow_catalog()
    server = Served(workers=1, REDIS_URL=own_redis.url())
    worker = Worker(REDIS_URL=own_redis.url())
    try:
        yield server.wait_ready()
    finally:
        print(server.output()[-6000:], worker.output()[-4000:])  # shown when the test fails
        server.stop()
        worker.stop()


def _drained() -> bool:
    try:
        return sync_redis().xlen(USAGE_STREAM) == 0
    except Exception:
        return False


def test_no_lockout_after_redis_restarts_empty(stack, own_redis):
    served = stack
    org = make_org(credits="5")
    key = make_key(org)[1]
    before = chat(served.api, key, stream=False)
    assert before.status == 200, before.body
    wait_for(_drained, 30, "the first request's usage drained")

    # Three slow streams (400 ms a token) whose holds are placed before Redis goes away.
    streams: list[Result] = []

    def stream() -> None:
        streams.append(chat(served.api, key, stream=True, model="switchyard/sim-slow"))

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: int(sync_redis().hget(f"sy:o:{org.id}", "held") or 0) > 0, 10, "the holds placed")
    time.sleep(0.5)
    own_redis.kill()
    time.sleep(3)
    own_redis.start()  # empty: no RDB, no AOF
    for t in threads:
        t.join(60)
    assert [r.status for r in streams] == [200, 200, 200], [r.body[-300:] for r in streams]
    assert all(r.body.rstrip().endswith(b"data: [DONE]") for r in streams)

    # A grant while the organisation's mirror is only what those settlements left in the empty Redis.
    call_command("grant_credits", "--org", org.slug, "--amount", "1", "--reason", "after the Redis loss")

    # The next request of the funded organisation is served (its balance is reloaded from the database).
    after = [chat(served.api, key, stream=s) for s in (False, True)]
    assert [r.status for r in after] == [200, 200], [r.body[:300] for r in after]

    answered = {r.generation for r in [before, *streams, *after]}
    assert None not in answered
    wait_for(_drained, 30, "usage drained after the loss")
    wait_for(lambda: open_holds(org.id) == NO_HOLDS, 10, "holds settled")

    # The loss is seen: by the web process (/readyz, /metrics) and by the auditor, once.
    data = httpx.get(served.url + "/readyz", timeout=10).json()["checks"]["redis_data"]
    assert data["losses_seen"] == 1 and data["last_loss_at"], data
    assert "switchyard_redis_data_losses 1.0" in httpx.get(served.url + "/metrics", timeout=10).text
    # The worker stores the epoch at its next drain, once Celery's consumer has reconnected to the new
    # Redis: its reconnect backoff grows 2, 4, 6, 8 s..., so a loaded machine can take 20 s and more.
    wait_for(lambda: RedisEpoch.objects.count() == 2, 60, "the worker stored the new epoch")
    report = books_audit_run(mirror_settle_seconds=0.5)
    assert [f for f in report.findings if f.startswith("redis_lost:")] == [
        f"redis_lost:epoch:{data['epoch']}"
    ], report.findings
    assert_books(org, "6", answered)  # type: ignore[arg-type]  # audits again: nothing new


def test_refuses_a_redis_that_keeps_nothing(sim_catalog, own_redis):
    """Without an append-only file, usage settled just before a Redis restart would be lost: full mode
    does not start on such a Redis unless SWITCHYARD_REDIS_ALLOW_VOLATILE accepts the risk."""
    server = Served(workers=1, REDIS_URL=own_redis.url(), SWITCHYARD_REDIS_ALLOW_VOLATILE="0")
    try:
        with pytest.raises(RuntimeError) as refused:
            server.wait_ready(timeout=30)
        assert "appendonly" in str(refused.value)
    finally:
        server.stop()
    accepted = Served(workers=1, REDIS_URL=own_redis.url(), SWITCHYARD_REDIS_ALLOW_VOLATILE="1")
    try:
        checks = httpx.get(accepted.wait_ready().url + "/readyz", timeout=10).json()["checks"]
        assert checks["redis_persistence"] == "none (risk accepted: SWITCHYARD_REDIS_ALLOW_VOLATILE)"
    finally:
        accepted.stop()


@pytest.fixture
def durable_redis():
    server = RedisServer(persist=True).start()
    try:
        with pointed_at(server):
            yield server
    finally:
        server.stop()


def test_usage_survives_a_redis_crash_with_its_append_only_file(sim_catalog, durable_redis):
    """Redis SIGKILLed under traffic and started again from its append-only file: every request answered
    200 is charged exactly once, none is lost, and no loss is reported."""
    server = Served(workers=1, REDIS_URL=durable_redis.url(), SWITCHYARD_REDIS_ALLOW_VOLATILE="0")
    worker = Worker(REDIS_URL=durable_redis.url())
    try:
        served = server.wait_ready()
        checks = httpx.get(served.url + "/readyz", timeout=10).json()["checks"]
        assert checks["redis_persistence"] == "aof (appendfsync always)", checks
        org = make_org(credits="5")
        key = make_key(org)[1]
        with Traffic(served.api, key, threads=4) as traffic:
            time.sleep(2)
            durable_redis.kill()
            time.sleep(2)
            durable_redis.start()
            time.sleep(3)
        results = traffic.results
        assert_clean_answers(results)
        after = [chat(served.api, key, stream=s) for s in (False, True)]
        assert [r.status for r in after] == [200, 200]
        answered = {r.generation for r in [*results, *after] if r.status == 200}
        wait_for(_drained, 60, "usage drained")
        wait_for(lambda: open_holds(org.id) == NO_HOLDS, 20, "holds settled")
        data = httpx.get(served.url + "/readyz", timeout=10).json()["checks"]["redis_data"]
        assert data["losses_seen"] == 0, data
        print(f"sent {len(results) + 2}, answered 200: {len(answered)}")
        assert_books(org, "5", answered)  # type: ignore[arg-type]
    finally:
        print(server.output()[-4000:], worker.output()[-3000:])
        server.stop()
        worker.stop()


def test_usage_settled_before_a_loss_is_written_again(stack, own_redis):
    """Redis (keeping nothing, the risk accepted) SIGKILLed under traffic and started again empty: the
    events settled in the last moments before the loss, not yet drained, are written by the web process
    that kept them; every request answered 200 is charged exactly once."""
    served = stack
    org = make_org(credits="5")
    key = make_key(org)[1]
    with Traffic(served.api, key, threads=4) as traffic:
        time.sleep(2)
        own_redis.kill()
        time.sleep(2)
        own_redis.start()
        time.sleep(3)
    results = traffic.results
    assert_clean_answers(results)
    after = [chat(served.api, key, stream=s) for s in (False, True)]
    assert [r.status for r in after] == [200, 200], [r.body[:300] for r in after]
    answered = {r.generation for r in [*results, *after] if r.status == 200}

    from routing.models import Generation

    wait_for(_drained, 30, "usage drained")
    # The web process waits a grace period (a worker's late batch) before writing what was lost.
    wait_for(
        lambda: Generation.objects.filter(organization=org).count() >= len(answered), 40, "usage recovered"
    )
    wait_for(lambda: open_holds(org.id) == NO_HOLDS, 10, "holds settled")
    recovered = AuditFinding.objects.filter(kind=FindingKind.USAGE_UNRECORDED, organization=org)
    print(
        f"sent {len(results) + 2}, answered 200: {len(answered)}, "
        f"written again by the web process: {recovered.count()}"
    )
    books_audit_run(mirror_settle_seconds=0.5)  # reports the loss itself (redis_lost), once
    assert_books(org, "5", answered)  # type: ignore[arg-type]
