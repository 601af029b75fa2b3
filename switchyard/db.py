"""Database work from the async hot path: one unit of work on a worker thread, with Django's
connection upkeep around it.

Django replaces a dead or expired connection only when a request starts or ends
(`close_old_connections` on the request signals). The hot path is not a Django request, so a thread
whose connection broke during a database outage kept the broken one and failed every later query
(a web process answered 503 on every key-cache miss long after PostgreSQL came back). Every unit
here starts and ends as a Django request would: a connection that saw an error and no longer works,
or outlived CONN_MAX_AGE, is closed, and the next query connects afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

T = TypeVar("T")


def _unit(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


async def db_call(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` on a worker thread as one unit of database work."""
    return await sync_to_async(_unit, thread_sensitive=False)(fn, args, kwargs)
