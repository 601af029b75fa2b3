"""One Celery beat per deployment, enforced: a beat only sends periodic tasks while it holds a Redis lock.

Run one `celery -A switchyard beat`. If a second one starts by mistake (or a replacement starts
before the old one is gone) it stands by: every few seconds it tries to take the lock, and takes
over within LOCK_TTL_SECONDS of the leader dying. The leader renews the lock on every tick and
releases it on a clean stop. Embedded mode (no Redis) runs no beat at all; there the lock is moot.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from typing import Any

from celery.beat import PersistentScheduler

from switchyard.shared import redis_enabled, sync_redis

logger = logging.getLogger("switchyard.beat")

LOCK_KEY = "sy:beat:leader"
LOCK_TTL_SECONDS = 30
# Compare-and-act on the holder's token, so a beat never extends or frees another beat's lock.
RENEW_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
RELEASE_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class SingleBeatScheduler(PersistentScheduler):
    """celery's default (shelve-backed) scheduler, gated by the leader lock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.leader = False
        self._standby_logged = False
        super().__init__(*args, **kwargs)

    def hold_lock(self) -> bool:
        if not redis_enabled():
            return True
        ttl_ms = LOCK_TTL_SECONDS * 1000
        try:
            client = sync_redis()
            if self.leader and client.eval(RENEW_LUA, 1, LOCK_KEY, self.token, ttl_ms):
                return True
            if client.set(LOCK_KEY, self.token, nx=True, px=ttl_ms):
                logger.info("beat %s holds the leader lock and sends periodic tasks", self.token)
                self.leader = True
                self._standby_logged = False
                return True
        except Exception:
            logger.warning("could not reach Redis for the beat lock", exc_info=True)
        if self.leader:
            logger.warning("beat %s lost the leader lock; standing by", self.token)
        elif not self._standby_logged:
            holder = _holder()
            logger.warning("another beat (%s) holds the leader lock; standing by", holder)
            self._standby_logged = True
        self.leader = False
        return False

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self.hold_lock():
            return min(LOCK_TTL_SECONDS / 6, self.max_interval)
        return min(super().tick(*args, **kwargs), LOCK_TTL_SECONDS / 3)

    def close(self) -> None:
        if self.leader and redis_enabled():
            try:
                sync_redis().eval(RELEASE_LUA, 1, LOCK_KEY, self.token)
            except Exception:
                logger.warning("could not release the beat lock; it expires in %d s", LOCK_TTL_SECONDS)
            self.leader = False
        super().close()


def _holder() -> str:
    try:
        raw = sync_redis().get(LOCK_KEY)
    except Exception:
        return "unknown"
    return raw.decode() if isinstance(raw, bytes) else str(raw)
