"""The product runs without the HTTP stacks only tests and the bench use (aiohttp, httpx, sniffio are in
the dev extra, not the runtime dependencies): importing every entry point with them blocked works."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("aiohttp", "httpx", "sniffio")


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_they_are_not_runtime_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not _names(project["dependencies"]) & set(BLOCKED)
    assert {"aiohttp", "httpx"} <= _names(project["optional-dependencies"]["dev"])


def test_the_entry_points_import_without_them() -> None:
    code = (
        "import sys\n"
        f"for name in {BLOCKED!r}: sys.modules[name] = None\n"
        "import django; django.setup()\n"
        "import switchyard.asgi, switchyard.celery, routing.gateway.app, routing.gateway.images\n"
        "import billing.stripe_client, routing.management.commands.serve\n"
    )
    env = {"DJANGO_SETTINGS_MODULE": "switchyard.settings", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
