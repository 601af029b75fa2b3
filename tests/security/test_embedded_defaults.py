"""Embedded mode out of the box (no environment at all) shows users no technical pages: DEBUG is off,
the secret key is generated once under var/ (0600) and reused, the encryption keys derive from it, and
the site still works over plain http://127.0.0.1 (no SSL redirect, no Secure-only cookies)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SETTINGS_SCRIPT = """
import json, django
django.setup()
from django.conf import settings as s
print(json.dumps({
    "DEBUG": s.DEBUG,
    "SECRET_KEY": s.SECRET_KEY,
    "ENC": s.SWITCHYARD_ENCRYPTION_KEYS,
    "SSL_REDIRECT": getattr(s, "SECURE_SSL_REDIRECT", False),
    "SESSION_SECURE": s.SESSION_COOKIE_SECURE,
    "CSRF_SECURE": s.CSRF_COOKIE_SECURE,
    "FINDERS": s.WHITENOISE_USE_FINDERS,
    "STATIC": s.STORAGES["staticfiles"]["BACKEND"],
    "PROTOCOL": s.ACCOUNT_DEFAULT_HTTP_PROTOCOL,
}))
"""

# The 404 and 500 pages as a user of a default embedded server gets them (DEBUG as the settings say).
PAGES_SCRIPT = """
import json, django
django.setup()
from django.test import Client
from django.test.utils import override_settings, setup_test_environment
setup_test_environment(debug=None)
with override_settings(ROOT_URLCONF="tests.crash_urls", ALLOWED_HOSTS=["testserver"]):
    client = Client(raise_request_exception=False)
    missing = client.get("/no-such-page/at-all")
    crash = client.get("/outside/test-crash-plain")
print(json.dumps({"404": [missing.status_code, missing.content.decode()],
                  "500": [crash.status_code, crash.content.decode()]}))
"""


def _clean_env(var_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SECURE_", "SESSION_", "CSRF_", "DJANGO_", "SWITCHYARD_", "PYTEST", "STRIPE_"))
        and k not in ("DEBUG", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")
    }
    env.update(DJANGO_SETTINGS_MODULE="switchyard.settings", SWITCHYARD_VAR_DIR=str(var_dir), **extra)
    return env


def _run(script: str, env: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def var_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


def test_embedded_mode_defaults_to_debug_off_with_a_persisted_generated_secret(var_dir):
    first = _run(SETTINGS_SCRIPT, _clean_env(var_dir))
    assert first["DEBUG"] is False
    secret_file = var_dir / "secret_key"
    assert secret_file.exists()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert first["SECRET_KEY"] == secret_file.read_text().strip() and len(first["SECRET_KEY"]) >= 50
    assert "dev-only" not in first["SECRET_KEY"]
    # Reused, not regenerated: sessions and stored provider keys survive a restart.
    second = _run(SETTINGS_SCRIPT, _clean_env(var_dir))
    assert second["SECRET_KEY"] == first["SECRET_KEY"] and second["ENC"] == first["ENC"]
    assert len(first["ENC"]) == 1
    # A local mode: plain http on 127.0.0.1 keeps working, and static files need no collectstatic.
    assert (
        first["SSL_REDIRECT"] is False and first["SESSION_SECURE"] is False and first["CSRF_SECURE"] is False
    )
    assert first["FINDERS"] is True
    assert "Manifest" not in first["STATIC"]
    assert first["PROTOCOL"] == "http"


def test_debug_1_still_turns_debug_on_for_development(var_dir):
    assert _run(SETTINGS_SCRIPT, _clean_env(var_dir, DEBUG="1"))["DEBUG"] is True


def test_an_explicit_secret_key_wins_and_nothing_is_written(var_dir):
    values = _run(SETTINGS_SCRIPT, _clean_env(var_dir, SECRET_KEY="k" * 60))
    assert values["SECRET_KEY"] == "k" * 60
    assert not (var_dir / "secret_key").exists()


def test_default_embedded_404_and_500_are_not_djangos_technical_pages(var_dir):
    pages = _run(PAGES_SCRIPT, _clean_env(var_dir))
    status, body = pages["404"]
    assert status == 404
    assert "URLconf" not in body and "Using the URLconf" not in body and "DEBUG = True" not in body
    status, body = pages["500"]
    assert status == 500
    assert "Traceback" not in body and "s3cr3t-internal-detail" not in body and "DEBUG = True" not in body
