"""A redis-server a fault test owns on a port of its own (never the machine's shared one), which it may
stop, kill and start again empty or with what it persisted; and pointing this test process at it."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from django.test import override_settings

from billing.holds import scripts
from switchyard.shared import reset_clients
from tests.live import free_port


class RedisServer:
    """`RedisServer(persist=False).start()`: no RDB, no AOF, like a cache-only deployment; `persist=True`
    keeps an append-only file fsynced on every write in its own directory."""

    def __init__(self, *, persist: bool = False) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="sy-redis-")
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir]
        args += ["--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            args,
            stdout=open(Path(self.dir) / "log", "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 15
        while True:
            try:
                if client.ping():
                    return self
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: what an out-of-memory kill or a crashed host does (nothing saved on the way out)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def pointed_at(server: RedisServer) -> Iterator[None]:
    """This test process's own Redis clients (the auditor, the checks) use `server` meanwhile."""
    reset_clients()
    scripts.reset()
    with override_settings(REDIS_URL=server.url()):
        try:
            yield
        finally:
            reset_clients()
            scripts.reset()
