"""Log lines carry only their own request's generation id: work a request happens to start for the
whole process (the endpoint-health refresh loop, the catalog poll, batched token charges) logs with
none. Captured from a real web process's JSON log while its Redis (this test's own) goes away."""

from __future__ import annotations

import time

import orjson
import pytest
from django.conf import settings

from tests.factories import make_key, make_org
from tests.faults.redis_server import RedisServer, pointed_at
from tests.faults.traffic import chat, wait_for
from tests.production.procs import Served

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.REDIS_URL,
        reason="full mode only: the shared health view and its refresh loop need Redis (set REDIS_URL)",
    ),
]


def _lines(output: str) -> list[dict]:
    lines = []
    for raw in output.splitlines():
        if raw.startswith("{"):
            try:
                lines.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                continue
    return lines


def test_detached_work_logs_no_request_id(sim_catalog):
    redis_server = RedisServer().start()
    server = Served(workers=1, REDIS_URL=redis_server.url(), LOG_FORMAT="json")
    try:
        with pointed_at(redis_server):
            served = server.wait_ready()
            org = make_org(credits="5")
            key = make_key(org)[1]
            answered = [chat(served.api, key, stream=s) for s in (False, True, False)]
            assert [r.status for r in answered] == [200, 200, 200]
            redis_server.kill()  # the health refresh loop (started by the first request) now fails

            def warned() -> bool:
                return any(
                    "could not refresh endpoint health" in line["message"] for line in _lines(server.output())
                )

            wait_for(warned, 20, "the refresh loop's warning")
            time.sleep(1)
        lines = _lines(server.output())
        refresh = [line for line in lines if "could not refresh endpoint health" in line["message"]]
        assert refresh and all(line["generation_id"] is None for line in refresh), refresh[:2]
        # Nothing logged outside a request names one of the requests.
        ours = {r.generation for r in answered}
        strays = [
            line
            for line in lines
            if line["generation_id"] in ours and line["logger"] in ("switchyard.health", "switchyard.catalog")
        ]
        assert strays == [], strays[:2]
    finally:
        server.stop()
        redis_server.stop()
