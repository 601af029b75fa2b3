"""One Celery beat per deployment: a second beat stands by until the leader's lock is gone."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from switchyard import beat
from switchyard.celery import app

pytestmark = pytest.mark.skipif(
    not settings.REDIS_URL,
    reason="full mode only: the leader lock lives in Redis (embedded mode runs no beat)",
)


class _TestLock(beat.SingleBeatScheduler):
    pass


@pytest.fixture
def schedulers(tmp_path, monkeypatch):
    # Its own lock name: the suite's Celery worker runs a beat (-B) that holds the real one.
    monkeypatch.setattr(beat, "LOCK_KEY", "sy:beat:test-leader")
    made = [_TestLock(app=app, schedule_filename=str(tmp_path / f"beat-{i}"), lazy=True) for i in range(2)]
    yield made
    for s in made:
        if s.leader:
            s.close()


def test_only_one_beat_sends_tasks_and_a_standby_takes_over(schedulers):
    from switchyard.shared import sync_redis

    first, second = schedulers
    assert first.hold_lock() is True
    assert second.hold_lock() is False  # stands by
    assert first.hold_lock() is True  # the leader renews its own lock
    assert sync_redis().get("sy:beat:test-leader").decode() == first.token
    assert second.tick() <= beat.LOCK_TTL_SECONDS / 6  # a standby only polls for the lock
    first.close()  # a clean stop releases it
    assert sync_redis().get("sy:beat:test-leader") is None
    assert second.hold_lock() is True
    assert first.hold_lock() is False


def test_a_dead_leaders_lock_expires(schedulers):
    from switchyard.shared import sync_redis

    first, second = schedulers
    assert first.hold_lock() is True
    ttl_ms = sync_redis().pttl("sy:beat:test-leader")
    assert 0 < ttl_ms <= beat.LOCK_TTL_SECONDS * 1000
    first.leader = False  # it dies without releasing: expiry is the only way out
    sync_redis().pexpire("sy:beat:test-leader", 1)
    time.sleep(0.05)
    assert second.hold_lock() is True
