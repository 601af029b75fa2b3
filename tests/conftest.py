"""Shared fixtures: the catalog, organisations with keys, and clients."""

from __future__ import annotations

from pathlib import Path

import pytest
from rest_framework.test import APIClient

from tests.factories import make_key, make_org

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CATALOG = ROOT / "routing" / "catalog" / "default.yaml"


@pytest.fixture(scope="session", autouse=True)
def _flush_by_delete():
    """PostgreSQL: empty the tables after each transactional test with one DELETE per table instead of
    Django's TRUNCATE of all of them (about 0.06 s against 0.25 s for our 40 tables; run after every
    one of the several hundred such tests). Django's foreign keys are deferred, and its flush runs in
    one transaction, so the order of the DELETEs does not matter. Tests only: the flush command is
    untouched outside the suite."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    truncate = DatabaseOperations.sql_flush

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):  # type: ignore[no-untyped-def]
        if reset_sequences or allow_cascade:
            return truncate(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        return [f"DELETE FROM {self.quote_name(table)};" for table in tables]

    DatabaseOperations.sql_flush = sql_flush  # type: ignore[method-assign]
    yield
    DatabaseOperations.sql_flush = truncate  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """Each test starts with empty in-process caches (keys, catalog snapshot)."""
    from accounts.keys import _local
    from routing.catalog.snapshot import catalog
    from routing.ratelimit import local_buckets, purchased_cache

    _local.clear()
    catalog.clear()
    local_buckets.clear()  # embedded-mode rate-limit buckets (full mode's live in Redis, cleared below)
    purchased_cache.clear()
    yield
    _local.clear()
    catalog.clear()


@pytest.fixture
def default_catalog(db):
    from routing.catalog.loader import catalog_load
    from routing.catalog.snapshot import catalog

    summary = catalog_load([DEFAULT_CATALOG])
    catalog.clear()
    return summary


@pytest.fixture
def org(db):
    return make_org(credits="10")


@pytest.fixture
def org_key(org):
    """(ApiKey, secret) for `org`."""
    return make_key(org)


@pytest.fixture
def api(org_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {org_key[1]}")
    return client


@pytest.fixture
def anon():
    return APIClient()


@pytest.fixture(scope="session")
def live_server_session(django_db_setup, django_db_blocker):
    from tests.live import LiveServer

    # The server's own threads (catalog poll, usage writer) use the database between tests too.
    with django_db_blocker.unblock():
        server = LiveServer().start()
        yield server
        server.stop()
        _close_other_db_sessions()


def _close_other_db_sessions() -> None:
    """The server's worker threads keep PostgreSQL connections; end them so the test database can drop."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def live(live_server_session, transactional_db, celery_worker_process):
    """The running server, with a database whose writes it can see (committed, not in a test transaction)."""
    yield live_server_session
    flush_usage()


def flush_usage(timeout: float = 15.0) -> None:
    """Wait until every usage event so far is in the database (embedded writer or Celery worker)."""
    from switchyard.shared import redis_enabled

    if not redis_enabled():
        from billing.usage import embedded_writer

        embedded_writer().flush(timeout)
        return
    import time

    from billing.holds import USAGE_STREAM
    from switchyard.shared import sync_redis

    deadline = time.monotonic() + timeout
    client = sync_redis()
    while time.monotonic() < deadline:
        if client.xlen(USAGE_STREAM) == 0:
            return
        time.sleep(0.05)
    raise AssertionError("usage events were not drained by the Celery worker in time")


@pytest.fixture(autouse=True)
def _fresh_redis_state():
    """Full mode: drop Switchyard's Redis keys (not Celery's) so no test sees another's holds or mirrors."""
    from switchyard.shared import redis_enabled, sync_redis

    if redis_enabled():
        client = sync_redis()
        for name in client.scan_iter(match="sy:*", count=1000):
            if name != b"sy:epoch":  # deleting it would look like Redis lost its data (billing/recovery.py)
                client.delete(name)
    yield


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker):
    """Full mode: a real Celery worker (with beat) against the test database and Redis."""
    import os
    import subprocess
    import sys

    from django.conf import settings

    from switchyard.shared import redis_enabled

    if not redis_enabled():
        yield None
        return
    db = settings.DATABASES["default"]
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    # Drained every 0.1 s (1 s by default): tests wait for usage to reach the ledger after each request.
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SWITCHYARD_TESTING": "1",
        "SWITCHYARD_USAGE_DRAIN_SECONDS": "0.1",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "switchyard",
            "worker",
            "-B",
            "--loglevel",
            "WARNING",
            "--concurrency",
            "1",
            "--pool",
            "solo",
            "-s",
            str(ROOT / "var" / "celerybeat-schedule"),
        ],
        cwd=ROOT,
        env=env,
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def sim_catalog(transactional_db):
    from routing.catalog.loader import catalog_load
    from routing.catalog.snapshot import catalog

    summary = catalog_load([ROOT / "tests" / "data" / "sim_catalog.yaml"])
    catalog.clear()
    return summary
