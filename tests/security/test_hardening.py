"""Deployment hardening: `check --deploy` is clean with production settings, cookies are secure there,
every page carries the security headers, the dashboard enforces CSRF on every form, and Django admin is
for staff only, behind its own login throttle (django-axes)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from accounts.models import AuditEvent
from tests.factories import UserFactory
from tests.security.test_dashboard_isolation import OPS

ROOT = Path(__file__).resolve().parents[2]


def _production_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SECURE_", "SESSION_", "CSRF_", "DJANGO_", "SWITCHYARD_", "PYTEST"))
        and k not in ("DEBUG", "SECRET_KEY", "DATABASE_URL", "REDIS_URL")
    }
    env.update(
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        SWITCHYARD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="switchyard.example.com",
        # Production is full mode (the zero-services default is a local mode, served over plain http
        # on 127.0.0.1: tests/security/test_embedded_defaults.py). Neither is connected to here.
        DATABASE_URL="postgres://switchyard@db.switchyard.internal:5432/switchyard",
        REDIS_URL="redis://redis.switchyard.internal:6379/0",
        SWITCHYARD_VAR_DIR=str(ROOT / "var" / "deploy-check"),
        **extra,
    )
    return env


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=_production_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_settings():
    result = _manage("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_catches_a_removed_protection():
    """The check is real: switching HSTS off makes it fail (so the clean run above means something)."""
    result = _manage("check", "--deploy", "--fail-level", "WARNING", SECURE_HSTS_SECONDS="0")
    assert result.returncode != 0
    assert "security.W004" in result.stdout + result.stderr


def test_production_cookies_are_secure():
    script = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, "
        "s.CSRF_COOKIE_HTTPONLY, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS > 0, s.DEBUG)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**_production_env(), "DJANGO_SETTINGS_MODULE": "switchyard.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["True"] * 6 + ["False"], result.stdout + result.stderr


@pytest.mark.django_db
def test_session_and_csrf_cookies_carry_the_flags(settings):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    staff = UserFactory(email="root@example.com", is_staff=True, is_superuser=True)
    client = Client()
    page = client.get("/admin/login/")
    csrf = page.cookies["csrftoken"]
    assert csrf["secure"] and csrf["httponly"] and csrf["samesite"] == "Lax"
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": staff.email, "password": "correct-horse-battery", "csrfmiddlewaretoken": csrf.value},
    )
    assert response.status_code == 302, response.content[:500]
    session = response.cookies["sessionid"]
    assert session["secure"] and session["httponly"] and session["samesite"] == "Lax"


# --- headers ---------------------------------------------------------------------------------------


def _assert_security_headers(headers, *, html: bool) -> None:
    assert headers["X-Content-Type-Options"] == "nosniff"
    if html:
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["X-Frame-Options"] == "DENY"
        csp = headers["Content-Security-Policy"]
        for directive in (
            "default-src 'self'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ):
            assert directive in csp, csp
        assert "unsafe-eval" not in csp and "script-src 'self' 'unsafe-inline'" not in csp


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/", "/models", "/docs", "/accounts/login/", "/admin/login/", "/dashboard/"]
)
def test_pages_carry_security_headers(path, team):
    client = team.client("owner") if path.startswith("/dashboard") else Client()
    response = client.get(path)
    assert response.status_code == 200
    _assert_security_headers(response, html=True)


def test_api_responses_carry_nosniff(live, sim_catalog):
    for response in (
        httpx.get(f"{live.api}/models"),
        httpx.get(f"{live.api}/key"),  # 401 from DRF
        httpx.post(f"{live.api}/chat/completions", json={}),  # 401 from the raw ASGI gateway
        httpx.get(f"{live.api}/nope"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff", response.url


# --- CSRF ------------------------------------------------------------------------------------------


POST_OPS = [op for op in OPS if op.method == "post"]


@pytest.mark.parametrize("op", POST_OPS, ids=lambda op: op.id)
def test_every_dashboard_form_needs_the_csrf_token(world, op, settings):
    from tests.security.test_dashboard_isolation import _insider_state

    settings.STRIPE_API_KEY = "sk_test_not_used"
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.owner)
    before = _insider_state(world)
    response = client.post(op.url(world), op.data(world))
    assert response.status_code == 403, op.id
    assert _insider_state(world) == before


# --- Django admin ----------------------------------------------------------------------------------


def _admin_changelists() -> list[str]:
    return sorted(
        reverse(f"admin:{m._meta.app_label}_{m._meta.model_name}_changelist") for m in admin.site._registry
    )


@pytest.mark.django_db
@pytest.mark.parametrize("url", _admin_changelists())
def test_admin_is_for_staff_only(url, team):
    for client in (Client(), team.client("owner")):  # anonymous, and an organisation owner
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url
    staff_no_perms = UserFactory(email="helpdesk@example.com", is_staff=True)
    client = Client()
    client.force_login(staff_no_perms)
    assert client.get(url).status_code == 403
    root = UserFactory(email="root@example.com", is_staff=True, is_superuser=True)
    client.force_login(root)
    assert client.get(url).status_code == 200


@pytest.mark.django_db
def test_admin_login_is_throttled(settings):
    settings.AXES_FAILURE_LIMIT = 3
    staff = UserFactory(email="root@example.com", is_staff=True, is_superuser=True)
    client = Client()

    def attempt(password: str):
        return client.post("/admin/login/?next=/admin/", {"username": staff.email, "password": password})

    for _ in range(2):
        assert attempt("wrong").status_code == 200  # the login form again, with an error
    assert attempt("wrong").status_code == 429  # the third failure locks out
    locked = attempt("correct-horse-battery")
    assert locked.status_code == 429 and "_auth_user_id" not in client.session
    # Another address is not locked out by this one's failures, but the username is.
    other = Client(REMOTE_ADDR="10.9.8.7")
    assert (
        other.post(
            "/admin/login/", {"username": staff.email, "password": "correct-horse-battery"}
        ).status_code
        == 429
    )
    fresh = UserFactory(email="other-admin@example.com", is_staff=True, is_superuser=True)
    ok = other.post(
        "/admin/login/?next=/admin/", {"username": fresh.email, "password": "correct-horse-battery"}
    )
    assert ok.status_code == 302
    assert AuditEvent.objects.filter(action="staff.login", actor=fresh, ip_address="10.9.8.7").exists()
    assert not AuditEvent.objects.filter(action="staff.login", actor=staff).exists()


@pytest.mark.django_db
def test_dashboard_sign_in_is_not_locked_by_the_admin_throttle(settings):
    """The throttle is the admin's own: failed dashboard sign-ins do not lock anyone out of it."""
    settings.AXES_FAILURE_LIMIT = 2
    UserFactory(email="dev@example.com")
    client = Client()
    for _ in range(4):
        response = client.post("/accounts/login/", {"login": "dev@example.com", "password": "wrong"})
        assert response.status_code == 200
    from axes.models import AccessAttempt

    assert not AccessAttempt.objects.exists()
