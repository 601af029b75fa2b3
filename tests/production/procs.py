"""Real `manage.py serve` processes (uvicorn, production mode) against the test database and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.live import free_port

ROOT = Path(__file__).resolve().parents[2]
SLOW_CATALOG = Path(__file__).resolve().parent / "slow_catalog.yaml"


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a process that shares this test run's database (and Redis in full mode)."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        url = f"sqlite:///{db['NAME']}"
    else:
        url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "1", "SWITCHYARD_TESTING": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(extra)
    return env


class Served:
    """One `manage.py serve` process tree; its combined output goes to a temporary file."""

    def __init__(self, *, workers: int = 1, args: tuple[str, ...] = (), **env: str) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="serve-", suffix=".log", delete=False)
        cmd = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--workers", str(workers), *args]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=subprocess_env(**env), stdout=self.log, stderr=subprocess.STDOUT
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> Served:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"serve was not ready after {timeout} s:\n{self.output()}")

    def sigterm(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        os.unlink(self.log.name)


def load_slow_catalog() -> None:
    from routing.catalog.loader import catalog_load
    from routing.catalog.snapshot import catalog

    catalog_load([SLOW_CATALOG])
    catalog.clear()


def open_holds(org_id: int) -> dict[str, int]:
    """What is still reserved for an organisation: hold records and (full mode) the mirror's `held`."""
    from switchyard.shared import redis_enabled, sync_redis

    if redis_enabled():
        client = sync_redis()
        return {
            "holds": client.zcard("sy:holds") + sum(1 for _ in client.scan_iter(match="sy:h:*")),
            "held_units": int(client.hget(f"sy:o:{org_id}", "held") or 0),
        }
    from billing.models import Hold, HoldStatus

    return {
        "holds": Hold.objects.filter(organization_id=org_id, status=HoldStatus.OPEN).count(),
        "held_units": 0,
    }


NO_HOLDS = {"holds": 0, "held_units": 0}
