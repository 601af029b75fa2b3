"""Liveness and readiness for load balancers and orchestrators: /healthz and /readyz.

/healthz answers 200 while the process can run its event loop (no I/O). /readyz answers 200 only when
the database answers, Redis answers and keeps an append-only file or its risk is accepted (full mode;
switchyard/durability.py, which also reports the Redis data epochs this process saw), every migration
is applied and the process is not draining for shutdown; otherwise 503 with the failing checks named.
It also reports how many usage events are parked (informational: they never make a process unready).
Both are served before Django
(see switchyard/asgi.py), so they cost no middleware and never touch a session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from switchyard import drain, durability
from switchyard.db import db_call
from switchyard.errors import error_body
from switchyard.shared import async_redis, redis_enabled

logger = logging.getLogger("switchyard.health")

CHECK_TIMEOUT_SECONDS = 3.0
# Once every migration is applied it stays so for this process's life in practice; re-check now and
# then (a deploy that adds migrations restarts the processes anyway).
MIGRATIONS_RECHECK_SECONDS = 60.0
_migrations_ok_at: float | None = None


async def send_json(
    send: Any, status: int, body: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = orjson.dumps(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def unapplied_migrations() -> list[str]:
    """`app.migration` names not yet applied to the default database (connects to it)."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{migration.app_label}.{migration.name}" for migration, backwards in plan if not backwards]


_database_reports: dict[str, Callable[[], Any]] = {}


def database_report(name: str, report: Callable[[], Any]) -> None:
    """Register a figure /readyz reports from the database, read in the same worker thread as its
    checks (billing: `usage_parked`). Informational: a report never makes a process unready, and one
    that raises counts as the database being unreachable. The apps register in AppConfig.ready."""
    _database_reports[name] = report


def _database_check() -> tuple[list[str], dict[str, Any]]:
    """SELECT 1, then the migration plan (cached while it is empty), then the registered reports.
    Returns (unapplied migrations, reports; none while migrations are unapplied)."""
    global _migrations_ok_at
    from django.db import close_old_connections, connection

    close_old_connections()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    now = time.monotonic()
    if _migrations_ok_at is None or now - _migrations_ok_at >= MIGRATIONS_RECHECK_SECONDS:
        pending = unapplied_migrations()
        _migrations_ok_at = None if pending else now
        if pending:
            return pending, dict.fromkeys(_database_reports)
    return [], {name: report() for name, report in _database_reports.items()}


async def readiness() -> tuple[bool, dict[str, Any]]:

    checks: dict[str, Any] = {}
    try:
        pending, reports = await asyncio.wait_for(db_call(_database_check), CHECK_TIMEOUT_SECONDS)
        checks["database"] = "ok"
        checks["migrations"] = "ok" if not pending else {"unapplied": pending}
        # Reported, never a reason to be unready: parked usage needs an operator, not fewer web
        # processes (docs/operations-usage.md).
        checks.update(reports)
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
        checks["migrations"] = "unknown"
    if redis_enabled():
        try:
            await asyncio.wait_for(async_redis().ping(), CHECK_TIMEOUT_SECONDS)
            checks["redis"] = "ok"
            kept = await asyncio.wait_for(durability.check(async_redis()), CHECK_TIMEOUT_SECONDS)
            checks["redis_persistence"] = kept["persistence"] if kept["ok"] else kept["problem"]
            checks["redis_data"] = {k: kept[k] for k in ("epoch", "losses_seen", "last_loss_at")}
            if not kept["ok"]:
                checks["redis"] = "not durable"
        except Exception as exc:
            checks["redis"] = f"unreachable: {type(exc).__name__}"
    else:
        checks["redis"] = "not used (embedded mode)"
    checks["draining"] = drain.draining()
    ready = (
        checks["database"] == "ok"
        and checks["migrations"] == "ok"
        and checks["redis"] in ("ok", "not used (embedded mode)")
        and not checks["draining"]
    )
    return ready, checks


def _method_ok(scope: dict[str, Any]) -> bool:
    return scope["method"] in ("GET", "HEAD")


async def healthz_endpoint(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if not _method_ok(scope):
        await send_json(send, 405, error_body(405, "Use GET."), [(b"allow", b"GET, HEAD")])
        return
    await send_json(send, 200, {"status": "ok"})


async def readyz_endpoint(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if not _method_ok(scope):
        await send_json(send, 405, error_body(405, "Use GET."), [(b"allow", b"GET, HEAD")])
        return
    ready, checks = await readiness()
    if not ready:
        logger.warning("not ready: %s", checks)
    await send_json(
        send, 200 if ready else 503, {"status": "ready" if ready else "unavailable", "checks": checks}
    )
