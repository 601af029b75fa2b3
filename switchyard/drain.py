"""Graceful shutdown of a web process: let in-flight streams finish up to a deadline, then end them.

On SIGTERM (or the first SIGINT) the ASGI server stops accepting connections and waits for the open
ones. Streams can run for minutes, so after `SWITCHYARD_SHUTDOWN_DRAIN_SECONDS` the streams still
running are stopped: the hot path ends each with an in-stream error chunk and `[DONE]`, and settles
its hold for what was produced (see routing.gateway.pipeline.respond_stream). The signal hook chains to
the server's own handler, so it works under any uvicorn invocation with lifespan on; `manage.py
serve` sets uvicorn's own graceful timeout a little above the deadline as a backstop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

logger = logging.getLogger("switchyard.drain")

_streams: set[asyncio.Future[Any]] = set()
_stopped: set[asyncio.Future[Any]] = set()
_state: dict[str, Any] = {"draining_since": None, "installed": False, "task": None}


def track(work: asyncio.Future[Any]) -> None:
    _streams.add(work)


def untrack(work: asyncio.Future[Any]) -> None:
    _streams.discard(work)
    _stopped.discard(work)


def stopped_for_shutdown(work: asyncio.Future[Any]) -> bool:
    """True when `work` was cancelled by the drain deadline (not by its client or the server)."""
    return work in _stopped


def draining() -> bool:
    return _state["draining_since"] is not None


def in_flight() -> int:
    return len(_streams)


async def _drain(deadline: float) -> None:
    end = time.monotonic() + deadline
    while _streams and time.monotonic() < end:
        await asyncio.wait(list(_streams), timeout=max(end - time.monotonic(), 0))
    if _streams:
        logger.warning(
            "drain deadline (%.0f s) reached: ending %d in-flight stream(s) with an error",
            deadline,
            len(_streams),
        )
    for work in list(_streams):
        _stopped.add(work)
        work.cancel()


def begin(deadline: float | None = None) -> None:
    """Start draining (idempotent): must run on the event loop's thread."""
    if _state["draining_since"] is not None:
        return
    _state["draining_since"] = time.monotonic()
    seconds = float(settings.SWITCHYARD_SHUTDOWN_DRAIN_SECONDS if deadline is None else deadline)
    logger.info("shutting down: draining %d in-flight stream(s) for up to %.0f s", len(_streams), seconds)
    _state["task"] = asyncio.get_running_loop().create_task(_drain(seconds))


_flushers: list[Callable[[float], None]] = []


def on_exit_flush(flush: Callable[[float], None]) -> None:
    """Register what must be written before this process exits, called with a timeout in seconds
    (billing: the embedded usage writer's queue). The apps register in AppConfig.ready."""
    if flush not in _flushers:
        _flushers.append(flush)


async def flush_usage_writer(timeout: float = 10.0) -> None:
    """Embedded mode: write the usage events still queued in this process before it exits (uvicorn
    ends a signalled process by re-raising the signal, so atexit hooks never run)."""
    for flush in _flushers:
        await sync_to_async(flush, thread_sensitive=False)(timeout)


def install_signal_hook() -> None:
    """Chain SIGTERM/SIGINT to start draining, then call the server's own handler.

    Called at lifespan start-up, after uvicorn installed its handlers; does nothing off the main
    thread (the test suite's in-thread server), where signals cannot be handled anyway."""
    if _state["installed"] or threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue  # the server does not handle this signal: its default (exit now) stays

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(begin)
            previous(signum, frame)

        signal.signal(sig, handler)
    _state["installed"] = True
