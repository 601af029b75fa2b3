"""A Celery worker SIGKILLed in the middle of a usage batch: another worker claims the batch (XAUTOCLAIM
after SWITCHYARD_USAGE_CLAIM_IDLE_MS) and redoes it once, never twice: one ledger entry per charged
generation, exact balances, and the Redis mirror agrees with the database."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import pytest
from django.conf import settings

from billing.holds import USAGE_STREAM
from billing.tasks import GROUP
from switchyard.shared import sync_redis
from tests.factories import make_key, make_org
from tests.faults.traffic import assert_books, wait_for
from tests.faults.workers import Worker, seed_usage

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.REDIS_URL,
        reason="full mode only: embedded mode has no Celery workers (set DATABASE_URL and REDIS_URL)",
    ),
]
EVENTS = 3000


def _in_flight(pids: set[int]) -> int:
    """Entries the given worker processes read from the stream and have not acknowledged."""
    client = sync_redis()
    try:
        consumers = client.xinfo_consumers(USAGE_STREAM, GROUP)
    except Exception:
        return 0
    return sum(
        c["pending"]
        for c in consumers
        if int(str(c["name"].decode() if isinstance(c["name"], bytes) else c["name"]).rsplit("-", 1)[1])
        in pids
    )


@contextlib.contextmanager
def _paused(proc):  # type: ignore[no-untyped-def]
    """Pause the suite's own Celery worker (and its beat), if running, so this test's workers alone drain."""
    pids = []
    if proc is not None and proc.poll() is None:
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
        pids = [proc.pid, *(int(p) for p in out.split())]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def test_worker_killed_mid_batch_is_redone_once(transactional_db, celery_worker_process):
    with _paused(celery_worker_process):
        _kill_mid_batch()


def _kill_mid_batch() -> None:
    org, granted = make_org(credits="2000"), "2000"
    key = make_key(org)[0]
    claim = {"SWITCHYARD_USAGE_CLAIM_IDLE_MS": "1000"}
    answered = set(seed_usage(org.id, key.id, EVENTS))
    assert sync_redis().xlen(USAGE_STREAM) == EVENTS

    first = Worker(**claim)
    second = None
    try:
        pids: set[int] = set()

        def busy() -> bool:
            nonlocal pids
            pids = first.pids()
            return _in_flight(pids) > 0

        wait_for(busy, 30, "the first worker reading a batch")
        first.kill()
        stranded = _in_flight(pids)
        assert stranded > 0, "the worker was not killed mid-batch"
        left = sync_redis().xlen(USAGE_STREAM)
        assert 0 < left < EVENTS + 1

        second = Worker(**claim)
        wait_for(lambda: sync_redis().xlen(USAGE_STREAM) == 0, 60, "the stream drained by the second worker")
        # The dead worker's batch was claimed (no longer pending for it) and applied.
        assert _in_flight(pids) == 0
        time.sleep(0.5)
        assert_books(org, granted, answered)
    finally:
        first.stop()
        if second is not None:
            second.stop()
