"""Retrying a call that is safe to repeat until it succeeds or a deadline passes: the settlement's failure
policy (docs/operations/failure-policy.md, SWITCHYARD_SETTLE_RETRY_SECONDS), written once for every
caller (a request's settlement, a lost hold's release)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from switchyard.shared import setting

logger = logging.getLogger("switchyard.retry")

T = TypeVar("T")

FIRST_DELAY = 0.2  # a Redis blink (a failover, a restart) is often over within a fraction of a second
MAX_DELAY = 5.0  # and a long outage is still tried every few seconds, so it is noticed soon after
LOGGED_FAILURES = 3  # an outage of minutes would otherwise log one traceback per try per request


class GaveUp(Exception):
    """Every try of `what` failed until the deadline; the last failure is the `__cause__`."""

    def __init__(self, what: str, attempts: int) -> None:
        super().__init__(f"{what}: gave up after {attempts} attempts")
        self.what = what
        self.attempts = attempts


def backoff(attempt: int, *, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the `attempt`-th failure (1-based): FIRST_DELAY doubling up to MAX_DELAY,
    then between half and all of that at random ("equal jitter"), so the many requests of many
    processes that failed on the same outage do not all come back in the same instant."""
    ceiling = min(MAX_DELAY, FIRST_DELAY * 2 ** min(attempt - 1, 32))
    return ceiling / 2 + rng() * ceiling / 2


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    retry_on: tuple[type[Exception], ...] = (Exception,),
    seconds: float | None = None,
    log: logging.Logger = logger,
) -> T:
    """`await call()` until it returns, trying again after a failure in `retry_on` with `backoff`, for
    `seconds` (default SWITCHYARD_SETTLE_RETRY_SECONDS); the last try is made at the deadline, no
    sleep runs past it. Raises GaveUp (from the last failure) when the time is out; any other exception,
    and a cancellation, propagates at once. `call` makes a fresh awaitable each time, so it must be
    safe to repeat (idempotent). The first LOGGED_FAILURES failures are logged on `log`."""
    budget = float(setting("SWITCHYARD_SETTLE_RETRY_SECONDS")) if seconds is None else seconds
    deadline = time.monotonic() + budget
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except retry_on as exc:
            if attempt <= LOGGED_FAILURES:
                log.warning("%s failed (attempt %d): %r", what, attempt, exc, exc_info=True)
            left = deadline - time.monotonic()
            if left <= 0:
                raise GaveUp(what, attempt) from exc
            await asyncio.sleep(min(backoff(attempt), left))
