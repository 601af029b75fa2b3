"""The production recipe (docs/operations/production.md) works as written: its commands, taken from the
page itself, run in a clean `git clone` against a fresh PostgreSQL database and a Redis server of their
own, start a worker, beat and `serve`, and answer a chat completion from the simulated provider.

Not run from the page: the install (this reuses the test run's virtualenv, so no network) and the
database creation with `sudo -u postgres` (this creates a fresh database itself). Full mode only: it
needs PostgreSQL. It runs the committed tree (a clone), not uncommitted edits."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.live import free_port

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "operations" / "production.md"
DOC_DATABASE_URL = "postgres://switchyard:CHANGE-ME@127.0.0.1:5432/switchyard"
DOC_REDIS_URL = "redis://127.0.0.1:6379/0"
DOC_PORT = "8000"

pytestmark = [
    pytest.mark.skipif(
        not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
        reason="full mode only: the recipe runs against PostgreSQL",
    ),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server for its own Redis"),
    pytest.mark.timeout(600),
]


def recipe_blocks(text: str) -> dict[str, list[str]]:
    """The fenced blocks marked `<!-- recipe -->` (joined, in order), `<!-- recipe: processes -->` and
    `<!-- recipe: check -->` on the page."""
    blocks: dict[str, list[str]] = {"setup": [], "processes": [], "check": []}
    pattern = re.compile(r"<!-- recipe(?:: (\w+))? -->\n```bash\n(.*?)```", re.S)
    for kind, body in pattern.findall(text):
        blocks[kind or "setup"].append(body)
    return blocks


def _environment() -> dict[str, str]:
    """The clone's environment: the machine's, without this test run's settings."""
    drop = {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"}
    return {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith(("SWITCHYARD_", "PYTEST", "PROMETHEUS_"))
    }


class Redis:
    """A Redis of the recipe's own, with the append-only file that full mode requires of it."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--dir",
                str(data_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).returncode:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def fresh_database():
    import psycopg

    db = settings.DATABASES["default"]
    name = f"sy_recipe_{os.getpid()}"
    admin = dict(host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"] or None)
    with psycopg.connect(dbname="postgres", autocommit=True, **admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    yield f"postgres://{auth}@{db['HOST']}:{admin['port']}/{name}"
    with psycopg.connect(dbname="postgres", autocommit=True, **admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_production_recipe_runs_as_written_from_a_clean_clone(tmp_path, fresh_database):
    blocks = recipe_blocks(PAGE.read_text())
    assert blocks["setup"] and len(blocks["processes"]) == 1 and len(blocks["check"]) == 1
    clone = tmp_path / "switchyard"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    (clone / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (tmp_path / "redis").mkdir()
    redis = Redis(tmp_path / "redis")
    port = str(free_port())

    def adapt(script: str) -> str:
        script = script.replace(DOC_DATABASE_URL, fresh_database)
        script = script.replace(DOC_REDIS_URL, f"redis://127.0.0.1:{redis.port}/0")
        return script.replace(f"--port {DOC_PORT}", f"--port {port}").replace(
            f"127.0.0.1:{DOC_PORT}", f"127.0.0.1:{port}"
        )

    env = _environment()
    load = "set -a; . ./switchyard.env; set +a\n"
    processes: list[subprocess.Popen[bytes]] = []
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        setup = "set -euo pipefail\n" + adapt("".join(blocks["setup"])) + 'printf %s "$KEY" > .recipe-key\n'
        done = subprocess.run(["bash", "-c", setup], cwd=clone, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        key = (clone / ".recipe-key").read_text()
        assert key.startswith("sk-sy-v1-")

        for i, line in enumerate(adapt(blocks["processes"][0]).strip().splitlines()):
            out = open(logs / f"process-{i}.log", "wb")
            processes.append(
                subprocess.Popen(
                    ["bash", "-c", load + "exec " + line],
                    cwd=clone,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 120
        while True:
            assert all(p.poll() is None for p in processes), _logs(logs)
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve was not ready:\n" + _logs(logs)
            time.sleep(0.2)

        check = "set -euo pipefail\n" + load + "KEY=$(cat .recipe-key)\n" + adapt(blocks["check"][0])
        done = subprocess.run(["bash", "-c", check], cwd=clone, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + _logs(logs)
        assert '"status":"ready"' in done.stdout, done.stdout
        assert '"chat.completion"' in done.stdout and "Switchyard Simulator" in done.stdout, done.stdout
    finally:
        for proc in processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in processes:
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        redis.stop()


def _logs(folder: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(folder.iterdir())
    )
