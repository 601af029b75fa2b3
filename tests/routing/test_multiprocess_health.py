"""Two real uvicorn web processes (full mode: the same PostgreSQL and Redis) share endpoint health:
failures seen by one process open the circuit for the other, and a successful probe through one closes
it for the other. The second process is started with a failure threshold it can never reach, so when it
skips the endpoint, the open circuit can only have come from the first process through Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from django.conf import settings

from tests.conftest import ROOT
from tests.factories import make_key, make_org
from tests.gateway.openai_env import KEYS
from tests.live import free_port
from tests.routing.route_env import *  # noqa: F403 - the shared fixtures
from tests.routing.route_env import HELLO, endpoint_ids, hits

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL, reason="several web processes share state only in full mode"),
]

PINNED = {"order": ["r-a", "r-b"]}


class WebProcess:
    def __init__(self, name: str, **env: str) -> None:
        db = settings.DATABASES["default"]
        self.name = name
        self.port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "REDIS_URL": settings.REDIS_URL,
            "DEBUG": "1",
            "SWITCHYARD_TESTING": "1",
            **{f"SY_TEST_OAI_{k.upper()}_KEY": v for k, v in KEYS.items()},
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def start(self) -> WebProcess:
        cmd = [sys.executable, "-m", "uvicorn", "switchyard.asgi:application", "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port), "--log-level", "warning", "--lifespan", "on"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"{self.name} exited with {self.proc.returncode}"
            try:
                if httpx.get(f"{self.api}/models", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{self.name} did not start"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def chat(self, secret: str, provider: dict) -> httpx.Response:
        resp = httpx.post(
            f"{self.api}/chat/completions",
            json={"model": "test/route", "messages": HELLO, "provider": provider},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        return resp


@pytest.fixture
def two_processes(route_catalog, celery_worker_process) -> Iterator[tuple[WebProcess, WebProcess]]:
    # first: opens circuits after 3 failures and probes at once (no cooldown);
    # second: could never open one on its own failures, and keeps a circuit open for 10 minutes.
    first = WebProcess("first", SWITCHYARD_BREAKER_THRESHOLD="3", SWITCHYARD_BREAKER_COOLDOWN_SECONDS="0")
    second = WebProcess(
        "second", SWITCHYARD_BREAKER_THRESHOLD="1000000", SWITCHYARD_BREAKER_COOLDOWN_SECONDS="600"
    )
    try:
        yield first.start(), second.start()
    finally:
        first.stop()
        second.stop()


def served_by(resp: httpx.Response) -> str:
    return resp.json()["provider"]


def until(predicate, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_circuit_state_is_shared_between_web_processes(two_processes, upstreams):
    from switchyard.shared import sync_redis

    first, second = two_processes
    org = make_org(credits="5")
    secret = make_key(org)[1]
    r_a = endpoint_ids()["r-a"]

    # Both processes route to r-a while it is healthy.
    assert served_by(first.chat(secret, PINNED)) == "Route A"
    assert served_by(second.chat(secret, PINNED)) == "Route A"

    # r-a starts failing; only the first process sees it fail (each time failing over to r-b).
    upstreams.a.set_default("fail_503")
    for _ in range(3):
        assert served_by(first.chat(secret, PINNED)) == "Route B"
    assert sync_redis().hget("sy:cb", f"{r_a}:open") is not None

    # The second process skips r-a without trying it (its view refreshes within a second or so).
    def second_skips() -> bool:
        before = hits(upstreams)["r-a"]
        resp = second.chat(secret, PINNED)
        return served_by(resp) == "Route B" and hits(upstreams)["r-a"] == before

    until(second_skips, what="the second process to see the open circuit")
    before = hits(upstreams)["r-a"]
    for _ in range(3):
        assert served_by(second.chat(secret, PINNED)) == "Route B"
    assert hits(upstreams)["r-a"] == before
    endpoints = httpx.get(f"{second.api}/models/test/route/endpoints").json()["data"]["endpoints"]
    assert {e["tag"]: e["circuit"] for e in endpoints}["r-a"] == "open"

    # r-a recovers; a probe through the first process closes the circuit for both.
    upstreams.a.set_default("ok")
    assert served_by(first.chat(secret, PINNED)) == "Route A"
    assert sync_redis().hget("sy:cb", f"{r_a}:open") is None
    # The second process keeps circuits open for ten minutes on its own, so r-a serving it again
    # means it saw the first process's successful probe.
    until(
        lambda: served_by(second.chat(secret, PINNED)) == "Route A",
        what="the second process to see it closed",
    )
