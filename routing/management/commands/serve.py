"""`manage.py serve`: production serving, uvicorn (uvloop + httptools) with N worker processes.

Before it binds a port it refuses to start when the database or Redis (full mode) does not answer, or
with unapplied migrations (a web process on an old schema would fail on its first request) and collects static files if WhiteNoise's manifest is missing. With
several workers it points prometheus-client at a fresh multiprocess directory, so /metrics on any
worker reports all of them. SIGTERM drains in-flight streams (switchyard/drain.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from routing.gateway.upstream import check_configuration as check_upstream
from switchyard.health import unapplied_migrations
from switchyard.logging import logging_config
from switchyard.shared import redis_enabled, sync_redis


def _first_line(exc: Exception) -> str:
    """A driver's error, shortened to its first line (psycopg's carry a multi-line hint)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _default_workers() -> int:
    raw = os.environ.get("WEB_CONCURRENCY")
    if raw:
        try:
            return max(int(raw), 1)
        except ValueError:
            raise CommandError(f"WEB_CONCURRENCY must be an integer, got {raw!r}.")
    return os.cpu_count() or 1


class Command(BaseCommand):
    help = "Serve production mode (uvicorn, N workers) after checking migrations; SIGTERM drains streams."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--host", default=os.environ.get("HOST", "127.0.0.1"), help="bind address ($HOST)"
        )
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")), help="($PORT)")
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help="worker processes ($WEB_CONCURRENCY, else one per CPU)",
        )
        parser.add_argument("--access-log", action="store_true", help="log every request (JSON, with its id)")
        parser.add_argument("--check", action="store_true", help="only run the start-up checks, then exit")

    def handle(self, *args: Any, **options: Any) -> None:
        self.preflight()
        workers = options["workers"] or _default_workers()
        if options["check"]:
            self.stdout.write(
                f"ready to serve on {options['host']}:{options['port']} with {workers} worker(s)"
            )
            return
        if workers > 1:
            self.stdout.write(f"prometheus multiprocess directory: {self.metrics_dir(options['port'])}")
        # Worker processes are spawned, not forked, but leave no connection open across the start anyway.
        connections.close_all()
        import uvicorn

        drain = int(settings.SWITCHYARD_SHUTDOWN_DRAIN_SECONDS)
        if options["access_log"]:
            os.environ["SWITCHYARD_ACCESS_LOG"] = "1"  # read by the workers' LOGGING (settings)
        uvicorn.run(
            "switchyard.asgi:application",
            host=options["host"],
            port=options["port"],
            workers=workers,
            loop="uvloop",
            # httptools with read deadlines and a connection limit (SWITCHYARD_HEADER_TIMEOUT, ...).
            http="switchyard.server:TimedHttpToolsProtocol",
            lifespan="on",
            access_log=options["access_log"],
            log_config=logging_config(
                fmt=settings.LOG_FORMAT, level=settings.LOG_LEVEL, access=options["access_log"]
            ),
            proxy_headers=True,
            # uvicorn's own limit is a backstop: the app ends streams itself at the drain deadline.
            timeout_graceful_shutdown=drain + 10,
            timeout_keep_alive=int(os.environ.get("SWITCHYARD_KEEP_ALIVE_SECONDS", "5")),
        )

    def preflight(self) -> None:
        try:
            pending = unapplied_migrations()
        except Exception as exc:
            raise CommandError(
                f"Refusing to start: the database is unreachable ({_first_line(exc)}); "
                "check DATABASE_URL and that the server accepts connections."
            )
        if redis_enabled():
            try:
                sync_redis().ping()
            except Exception as exc:
                raise CommandError(
                    f"Refusing to start: Redis is unreachable at REDIS_URL ({_first_line(exc)}); "
                    "check REDIS_URL and that redis-server is running."
                )
        try:  # the proxy variables and the upstream CA bundle, before a provider call finds them wrong
            check_upstream(settings.SWITCHYARD_UPSTREAM_CA_BUNDLE)
        except ValueError as exc:
            raise CommandError(f"Refusing to start: {exc}.")
        if pending:
            shown = ", ".join(pending[:10]) + (" ..." if len(pending) > 10 else "")
            raise CommandError(
                f"Refusing to start: {len(pending)} unapplied migration(s): {shown}. "
                "Run `python manage.py migrate` first (once per deploy, before the web processes start)."
            )
        storage = settings.STORAGES["staticfiles"]["BACKEND"]
        manifest = Path(settings.STATIC_ROOT) / "staticfiles.json"
        if "Manifest" in storage and not manifest.exists():
            self.stdout.write("collecting static files (WhiteNoise's manifest is missing)")
            call_command("collectstatic", "--noinput", verbosity=0)

    def metrics_dir(self, port: int) -> str:
        """A fresh multiprocess directory (prometheus-client needs one that no earlier run left files in)."""
        path = Path(
            os.environ.get("PROMETHEUS_MULTIPROC_DIR") or Path(settings.VAR_DIR) / "prometheus" / str(port)
        )
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
        return str(path)
