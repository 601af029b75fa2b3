"""Organisations cannot see each other's objects (the alice/bob pattern)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from billing.services import usage_charge
from routing.models import Generation
from switchyard.money import to_units
from tests.factories import make_key, make_org


def _json(response):
    return json.loads(response.content, parse_float=Decimal)


def _client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def alice(db):
    org = make_org(slug="alice", credits="10")
    key, secret = make_key(org, name="alice key")
    return org, key, _client(secret)


@pytest.fixture
def bob(db):
    org = make_org(slug="bob", credits="3")
    key, secret = make_key(org, name="bob key")
    return org, key, _client(secret)


def _alice_generation(org, key) -> Generation:
    return Generation.objects.create(
        id="gen-alice-0001",
        organization=org,
        api_key=key,
        model="acme/model-1",
        provider="acme",
        status="success",
        tokens_prompt=10,
        tokens_completion=5,
        cost_units=to_units("0.0001"),
        created_at=timezone.now(),
    )


def test_owner_can_read_own_generation(alice):
    org, key, client = alice
    _alice_generation(org, key)
    response = client.get("/api/v1/generation", {"id": "gen-alice-0001"})
    assert response.status_code == 200, response.content
    data = _json(response)["data"]
    assert data["id"] == "gen-alice-0001"
    assert data["model"] == "acme/model-1"
    assert data["total_cost"] == Decimal("0.0001")


def test_outsider_gets_404_for_anothers_generation(alice, bob):
    a_org, a_key, _ = alice
    _, _, bob_client = bob
    _alice_generation(a_org, a_key)
    response = bob_client.get("/api/v1/generation", {"id": "gen-alice-0001"})
    assert response.status_code == 404
    body = response.json()
    assert body["error"]["code"] == 404
    assert isinstance(body["error"]["message"], str)
    assert "acme/model-1" not in response.content.decode()
    # Same answer as for an id that does not exist at all: no existence oracle.
    missing = bob_client.get("/api/v1/generation", {"id": "gen-does-not-exist"})
    assert missing.status_code == 404


def test_credits_show_only_own_organisation(alice, bob):
    a_org, a_key, a_client = alice
    _, _, b_client = bob
    usage_charge(
        organization_id=a_org.pk,
        generation_id="gen-a-usage",
        cost_units=to_units("1.5"),
        api_key_id=a_key.pk,
        model="acme/model-1",
    )

    a_data = _json(a_client.get("/api/v1/credits"))["data"]
    b_data = _json(b_client.get("/api/v1/credits"))["data"]
    assert a_data == {"total_credits": 10, "total_usage": Decimal("1.5")}
    assert b_data == {"total_credits": 3, "total_usage": 0}


def test_key_endpoint_describes_only_the_calling_key(alice, bob):
    _, a_key, a_client = alice
    b_org, b_key, b_client = bob
    usage_charge(
        organization_id=b_org.pk,
        generation_id="gen-b-usage",
        cost_units=to_units("0.25"),
        api_key_id=b_key.pk,
        model="acme/model-1",
    )

    a_data = _json(a_client.get("/api/v1/key"))["data"]
    b_data = _json(b_client.get("/api/v1/key"))["data"]
    assert "alice key" in a_data["label"] and a_key.prefix in a_data["label"]
    assert "bob key" in b_data["label"] and b_key.prefix in b_data["label"]
    assert "alice" not in json.dumps(b_client.get("/api/v1/key").json())
    assert a_data["usage"] == 0
    assert b_data["usage"] == Decimal("0.25")


def test_credits_and_key_require_authentication(db):
    anon = APIClient()
    for path in ("/api/v1/credits", "/api/v1/key", "/api/v1/generation?id=gen-x"):
        response = anon.get(path)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == 401
