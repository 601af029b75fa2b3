"""A web process SIGKILLed with streams in flight: their holds are released once its liveness key
expires (seconds), not after the holds' 15-minute TTL; nothing is charged for the streams it never
finished, and the organisation's next request (on another web process) is served."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from django.conf import settings

from tests.factories import make_key, make_org
from tests.faults.redis_server import RedisServer, pointed_at
from tests.faults.traffic import Result, assert_books, chat, wait_for
from tests.faults.workers import Worker
from tests.production.procs import NO_HOLDS, Served, load_slow_catalog, open_holds

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.REDIS_URL,
        reason="full mode only: embedded holds live in the one process's database (set REDIS_URL)",
    ),
]


def test_dead_web_process_holds_released_soon(sim_catalog):
    load_slow_catalog()
    redis_server = RedisServer().start()
    doomed = Served(workers=1, REDIS_URL=redis_server.url())
    other = Served(workers=1, REDIS_URL=redis_server.url())
    worker = Worker(REDIS_URL=redis_server.url())
    try:
        with pointed_at(redis_server):
            doomed.wait_ready()
            other.wait_ready()
            org = make_org(credits="5")
            key = make_key(org)[1]
            before = chat(doomed.api, key, stream=False)
            assert before.status == 200
            streams: list[Result] = []
            threads = [
                threading.Thread(
                    target=lambda: streams.append(
                        chat(doomed.api, key, stream=True, model="switchyard/sim-slow")
                    )
                )
                for _ in range(3)
            ]
            for t in threads:
                t.start()
            wait_for(lambda: open_holds(org.id)["holds"] >= 3, 10, "the streams' holds placed")
            time.sleep(1)
            doomed.proc.send_signal(signal.SIGKILL)
            doomed.proc.wait(10)
            killed_at = time.monotonic()
            for t in threads:
                t.join(30)
            assert all(r.status != 200 or not r.body.rstrip().endswith(b"[DONE]") for r in streams)
            # Liveness key (15 s) + the holds' grace (30 s from placement) + one reaper period (10 s).
            wait_for(lambda: open_holds(org.id) == NO_HOLDS, 90, "the dead process's holds released")
            released_after = time.monotonic() - killed_at
            print(f"holds released {released_after:.0f} s after the kill (TTL 900 s)")
            after = chat(other.api, key, stream=False)
            assert after.status == 200, after.body
            wait_for(lambda: open_holds(org.id) == NO_HOLDS, 10, "settled")
            from billing.holds import USAGE_STREAM
            from switchyard.shared import sync_redis

            wait_for(lambda: sync_redis().xlen(USAGE_STREAM) == 0, 30, "usage drained")
            assert_books(org, "5", {before.generation, after.generation})  # type: ignore[arg-type]
    finally:
        print(other.output()[-3000:], worker.output()[-3000:])
        for served in (doomed, other):
            if served.proc.poll() is None:
                served.stop()
        worker.stop()
        redis_server.stop()
