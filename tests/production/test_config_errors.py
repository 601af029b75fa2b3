"""A configuration mistake at start-up is one line on stderr naming the variable and the fix, with a
non-zero exit, from every entry point (`manage.py`, the ASGI module uvicorn imports, `serve --check`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import free_port

ROOT = Path(__file__).resolve().parents[2]
# Variables a developer's shell (or the full-mode test run) may carry that would change what is tested.
_CLEARED = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "DEBUG",
    "SECRET_KEY",
    "SWITCHYARD_ENCRYPTION_KEYS",
    "SWITCHYARD_PLAIN_HTTP",
    "DJANGO_SETTINGS_MODULE",
    "SWITCHYARD_TESTING",
)


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    base["SWITCHYARD_VAR_DIR"] = str(tmp_path)
    base.update(env)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=base, capture_output=True, text=True, timeout=120
    )


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


# Full mode (a DATABASE_URL is set) without DEBUG: the secrets are required. Settings fail before any
# connection is tried, so the database need not exist.
FULL = {"DEBUG": "0", "DATABASE_URL": "postgres://postgres@127.0.0.1:1/never-reached"}


def test_missing_secret_key_names_it_and_prints_the_command_that_makes_one(tmp_path):
    line = _one_line(_run(["manage.py", "check"], tmp_path, **FULL))
    assert "SECRET_KEY" in line
    assert "secrets.token_urlsafe" in line


def test_missing_encryption_keys_names_them_and_prints_the_command(tmp_path):
    line = _one_line(_run(["manage.py", "check"], tmp_path, **FULL, SECRET_KEY="k" * 50))
    assert "SWITCHYARD_ENCRYPTION_KEYS" in line
    assert "Fernet.generate_key" in line


def test_the_asgi_entry_point_prints_one_line_too(tmp_path):
    proc = _run(
        ["-m", "uvicorn", "switchyard.asgi:application", "--port", str(free_port())], tmp_path, **FULL
    )
    assert "SECRET_KEY" in _one_line(proc)


@pytest.mark.parametrize(
    "url",
    ["postgres://user@db.example:notaport/sy", "garbage", "postgres//missing-colon"],
)
def test_a_malformed_database_url_names_the_variable(tmp_path, url):
    line = _one_line(_run(["manage.py", "check"], tmp_path, DATABASE_URL=url, DEBUG="1"))
    assert "DATABASE_URL" in line


@pytest.mark.parametrize("scheme", ["mysql", "oracle", "mssql"])
def test_database_schemes_other_than_sqlite_and_postgresql_are_refused_by_name(tmp_path, scheme):
    line = _one_line(_run(["manage.py", "check"], tmp_path, DATABASE_URL=f"{scheme}://u@h/db", DEBUG="1"))
    assert "DATABASE_URL" in line and scheme in line
    assert "postgres" in line and "sqlite" in line
    assert "mysqlclient" not in line


@pytest.mark.parametrize("url", ["notaurl", "redis://127.0.0.1:xx/0", "http://127.0.0.1:6379/0"])
def test_a_malformed_redis_url_names_the_variable(tmp_path, url):
    line = _one_line(_run(["manage.py", "serve", "--check"], tmp_path, REDIS_URL=url, DEBUG="1"))
    assert "REDIS_URL" in line


def test_serve_check_fails_when_redis_is_unreachable(tmp_path):
    _run(["manage.py", "migrate", "--noinput", "-v0"], tmp_path, DEBUG="1").check_returncode()
    url = f"redis://127.0.0.1:{free_port()}/0"
    line = _one_line(_run(["manage.py", "serve", "--check"], tmp_path, REDIS_URL=url, DEBUG="1"))
    assert "Redis" in line and "REDIS_URL" in line


def test_serve_check_fails_when_the_database_is_unreachable(tmp_path):
    url = f"postgres://postgres@127.0.0.1:{free_port()}/nowhere"
    line = _one_line(_run(["manage.py", "serve", "--check"], tmp_path, DATABASE_URL=url, DEBUG="1"))
    assert "database" in line and "DATABASE_URL" in line


def test_serve_check_passes_in_embedded_mode(tmp_path):
    _run(["manage.py", "migrate", "--noinput", "-v0"], tmp_path, DEBUG="1").check_returncode()
    proc = _run(["manage.py", "serve", "--check"], tmp_path, DEBUG="1")
    assert proc.returncode == 0, proc.stderr
    assert "ready to serve" in proc.stdout


def test_runserver_refuses_and_names_make_run_and_serve(tmp_path):
    line = _one_line(_run(["manage.py", "runserver"], tmp_path, DEBUG="1"))
    assert "make run" in line and "serve" in line
