"""Process-wide handles to shared state: the async Redis client (full mode), small TTL caches, and the
detached tasks (settlements, hold releases) a web process finishes before it exits."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.core.signals import setting_changed

V = TypeVar("V")

_async_redis: Any = None
_sync_redis: Any = None


_settings_cache: dict[str, Any] = {}
_detached: set[asyncio.Task[Any]] = set()


def spawn_detached(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Run work that must finish even if the request's task is cancelled (a settlement, a hold's
    release); the lifespan shutdown waits for it (drain_detached)."""
    task = asyncio.get_running_loop().create_task(coro)
    _detached.add(task)
    task.add_done_callback(_detached.discard)
    return task


def start_shared(
    coro: Coroutine[Any, Any, V], loop: asyncio.AbstractEventLoop | None = None
) -> asyncio.Task[V]:
    """Start work done for the whole process (a refresh loop, a batched flush, a shared connection
    attempt) in an empty context: the request that happens to start it lends it nothing, so its log
    lines carry no generation id (a copied context made a refresh loop's warnings name whichever
    request started it, for the rest of the process's life)."""
    return (loop or asyncio.get_running_loop()).create_task(coro, context=contextvars.Context())


def detached_running() -> int:
    return len(_detached)


async def drain_detached(timeout: float = 30.0) -> None:
    if _detached:
        await asyncio.wait(list(_detached), timeout=timeout)


def setting(name: str) -> Any:
    """A Django setting, read through a plain dict: the hot path reads a dozen settings a request and
    each read through Django's lazy settings object cost about a microsecond (profiled). Settings are
    fixed for a process's life; tests that override one clear the cache (setting_changed below)."""
    try:
        return _settings_cache[name]
    except KeyError:
        value = _settings_cache[name] = getattr(settings, name)
        return value


def _forget_settings(**_: Any) -> None:
    _settings_cache.clear()


setting_changed.connect(_forget_settings)


def redis_enabled() -> bool:
    return bool(setting("REDIS_URL"))


def async_redis() -> Any:
    """One asyncio Redis client per process (pooled connections), created on first use."""
    global _async_redis
    if _async_redis is None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff

        # Failure policy: a call to an unreachable Redis fails within about 2 x 2 s (one retry, for a
        # pooled connection that went stale), never the client's default of four tries with backoff.
        _async_redis = aioredis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=2,
            socket_timeout=2,
            health_check_interval=30,
            max_connections=512,
            retry=Retry(ExponentialBackoff(cap=0.25, base=0.05), 1),
        )
    return _async_redis


def sync_redis() -> Any:
    global _sync_redis
    if _sync_redis is None:
        import redis

        _sync_redis = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    return _sync_redis


def reset_clients() -> None:
    """Forget clients (after fork, or between event loops in tests)."""
    global _async_redis, _sync_redis
    from switchyard import fastredis

    fastredis.reset()
    _async_redis = None
    _sync_redis = None


class TTLCache(Generic[V]):
    """A tiny in-process cache with a per-entry time-to-live; no locking needed under asyncio."""

    def __init__(self, ttl: float, max_items: int = 100_000) -> None:
        self.ttl = ttl
        self.max_items = max_items
        self._data: dict[str, tuple[float, V]] = {}

    def get(self, key: str) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] < time.monotonic():
            self._data.pop(key, None)
            return None
        return item[1]

    def set(self, key: str, value: V) -> None:
        if len(self._data) >= self.max_items:
            self._data.clear()
        self._data[key] = (time.monotonic() + self.ttl, value)

    def pop(self, key: str) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()
