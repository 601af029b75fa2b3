"""API keys: format, storage (hash only), and `GET /api/v1/key` authentication and shape."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import services
from accounts.keys import KEY_PREFIX, key_generate
from accounts.models import ApiKey
from billing.services import usage_charge
from switchyard.money import to_units
from tests.factories import make_key, make_org

KEY_RE = re.compile(r"^sk-sy-v1-[A-Za-z0-9_-]{43,}$")


def _json(response):
    """Parse a response keeping JSON numbers exact (no floats in expected values)."""
    return json.loads(response.content, parse_float=Decimal)


def _client(secret: str | None = None, header: str | None = None) -> APIClient:
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    elif secret is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def _assert_401(response) -> None:
    assert response.status_code == 401, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == 401
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


# --- format and storage -------------------------------------------------------------------------


def test_generated_keys_have_the_documented_format_and_256_bits():
    keys = {key_generate() for _ in range(200)}
    assert len(keys) == 200
    for secret in keys:
        assert KEY_RE.match(secret), secret
        random_part = secret[len(KEY_PREFIX) :]
        raw = base64.urlsafe_b64decode(random_part + "=" * (-len(random_part) % 4))
        assert len(raw) * 8 >= 256


@pytest.mark.django_db
def test_key_is_stored_only_as_its_hash_with_a_short_display_prefix():
    org = make_org(credits=None)
    key, secret = make_key(org, name="storage check")
    assert KEY_RE.match(secret)
    key.refresh_from_db()
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.startswith(key.prefix)
    assert key.prefix.startswith("sk-sy-v1-")
    assert len(key.prefix) <= len("sk-sy-v1-") + 8  # shows a few characters, never enough to matter

    # The secret (or its random part) appears in no column of any table.
    random_part = secret[len(KEY_PREFIX) :]
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            for row in cursor.fetchall():
                for value in row:
                    text = str(value)
                    assert secret not in text, f"secret stored in {table}"
                    assert random_part not in text, f"secret stored in {table}"


# --- GET /api/v1/key ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_key_endpoint_with_a_good_key_describes_the_calling_key():
    org = make_org(credits="3")
    key, secret = make_key(org, name="my key")
    response = _client(secret).get("/api/v1/key")
    assert response.status_code == 200, response.content
    data = _json(response)["data"]
    for field in ("label", "limit", "usage", "limit_remaining", "is_free_tier", "rate_limit"):
        assert field in data
    assert "my key" in data["label"]
    assert key.prefix in data["label"]
    assert secret not in json.dumps(response.json())
    assert data["limit"] is None
    assert data["limit_remaining"] is None
    assert data["usage"] == 0
    assert data["is_free_tier"] is True  # granted credits only, nothing purchased
    assert isinstance(data["rate_limit"], dict)


@pytest.mark.django_db
def test_lowercase_bearer_scheme_is_accepted():
    org = make_org(credits=None)
    _, secret = make_key(org)
    assert _client(header=f"bearer {secret}").get("/api/v1/key").status_code == 200


@pytest.mark.django_db
def test_missing_authorization_header_is_401_json():
    _assert_401(APIClient().get("/api/v1/key"))


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["Token x", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "sk-sy-v1-abc"])
def test_malformed_authorization_header_is_401_json(header):
    _assert_401(_client(header=header).get("/api/v1/key"))


@pytest.mark.django_db
def test_malformed_header_with_a_real_key_is_still_401():
    org = make_org(credits=None)
    _, secret = make_key(org)
    _assert_401(_client(header=f"Token {secret}").get("/api/v1/key"))
    _assert_401(_client(header=secret).get("/api/v1/key"))


@pytest.mark.django_db
def test_wrong_key_is_401():
    org = make_org(credits=None)
    _, secret = make_key(org)
    _assert_401(_client(key_generate()).get("/api/v1/key"))  # well-formed, never issued
    _assert_401(_client(secret[:-1] + ("A" if secret[-1] != "A" else "B")).get("/api/v1/key"))
    _assert_401(_client("not-a-key").get("/api/v1/key"))


@pytest.mark.django_db
def test_disabled_key_is_401():
    org = make_org(credits=None)
    key, secret = make_key(org)
    services.api_key_set_disabled(key=key, disabled=True)
    _assert_401(_client(secret).get("/api/v1/key"))


@pytest.mark.django_db
def test_deleted_key_is_401_and_row_is_kept():
    org = make_org(credits=None)
    key, secret = make_key(org)
    services.api_key_delete(key=key)
    _assert_401(_client(secret).get("/api/v1/key"))
    assert ApiKey.objects.filter(pk=key.pk, deleted_at__isnull=False).exists()


@pytest.mark.django_db
def test_expired_key_is_401_and_unexpired_key_works():
    org = make_org(credits=None)
    _, expired = make_key(org, expires_at=timezone.now() - timedelta(seconds=1))
    _, valid = make_key(org, expires_at=timezone.now() + timedelta(hours=1))
    _assert_401(_client(expired).get("/api/v1/key"))
    assert _client(valid).get("/api/v1/key").status_code == 200


@pytest.mark.django_db
def test_key_disabled_through_the_service_stops_working_on_the_next_request():
    org = make_org(credits=None)
    key, secret = make_key(org)
    client = _client(secret)
    assert client.get("/api/v1/key").status_code == 200
    services.api_key_set_disabled(key=key, disabled=True)
    _assert_401(client.get("/api/v1/key"))
    services.api_key_set_disabled(key=key, disabled=False)
    assert client.get("/api/v1/key").status_code == 200


@pytest.mark.django_db
def test_key_with_limit_reports_limit_and_remaining():
    org = make_org(credits="10")
    key, secret = make_key(org, limit_usd=Decimal("2.5"))
    assert key.limit_units == to_units("2.5")
    client = _client(secret)

    data = _json(client.get("/api/v1/key"))["data"]
    assert data["limit"] == Decimal("2.5")
    assert data["limit_remaining"] == Decimal("2.5")
    assert data["usage"] == 0

    usage_charge(
        organization_id=org.pk,
        generation_id="gen-limit-1",
        cost_units=to_units("0.75"),
        api_key_id=key.pk,
        model="test/model",
    )
    data = _json(client.get("/api/v1/key"))["data"]
    assert data["usage"] == Decimal("0.75")
    assert data["limit_remaining"] == Decimal("1.75")

    # Spending past the limit floors the remainder at zero rather than going negative.
    usage_charge(
        organization_id=org.pk,
        generation_id="gen-limit-2",
        cost_units=to_units("5"),
        api_key_id=key.pk,
        model="test/model",
    )
    data = _json(client.get("/api/v1/key"))["data"]
    assert data["usage"] == Decimal("5.75")
    assert data["limit_remaining"] == 0


@pytest.mark.django_db
def test_usage_of_another_key_in_the_same_org_does_not_count():
    org = make_org(credits="10")
    _, secret = make_key(org, limit_usd=Decimal("1"))
    other, _ = make_key(org)
    usage_charge(
        organization_id=org.pk,
        generation_id="gen-other-key",
        cost_units=to_units("0.5"),
        api_key_id=other.pk,
        model="test/model",
    )
    data = _json(_client(secret).get("/api/v1/key"))["data"]
    assert data["usage"] == 0
    assert data["limit_remaining"] == 1
