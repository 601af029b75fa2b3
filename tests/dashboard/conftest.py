"""Dashboard fixtures: one organisation with an owner, an admin and two members, and an outsider with their own."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import ApiKey, Membership, Organization, Role, User
from routing.models import Generation
from switchyard.money import to_units
from tests.factories import UserFactory, make_key, make_org


@dataclass
class Team:
    org: Organization
    owner: User
    admin: User
    member: User
    member2: User
    outsider: User
    outsider_org: Organization
    owner_key: ApiKey
    member_key: ApiKey
    member2_key: ApiKey
    outsider_key: ApiKey
    generation: Generation
    outsider_generation: Generation

    def client(self, who: str) -> Client:
        client = Client()
        client.force_login(getattr(self, who))
        return client


def _generation(gen_id: str, org: Organization, key: ApiKey, **kw: object) -> Generation:
    defaults: dict[str, object] = {
        "model": "switchyard/sim-1",
        "provider": "simulated",
        "status": "success",
        "tokens_prompt": 12,
        "tokens_completion": 30,
        "cost_units": to_units("0.0000132"),
        "latency_ms": 42,
        "created_at": timezone.now(),
        "attempts": [{"provider": "simulated", "model": "switchyard/sim-1", "status": 200, "latency_ms": 40}],
    }
    defaults.update(kw)
    return Generation.objects.create(id=gen_id, organization=org, api_key=key, **defaults)


@pytest.fixture
def team(db) -> Team:
    org = make_org(slug="acme", credits="10")
    outsider_org = make_org(slug="rival", credits="3")
    users = {
        name: UserFactory(email=f"{name}@example.com")
        for name in ("owner", "admin", "member", "member2", "outsider")
    }
    Membership.objects.create(user=users["owner"], organization=org, role=Role.OWNER)
    Membership.objects.create(user=users["admin"], organization=org, role=Role.ADMIN)
    Membership.objects.create(user=users["member"], organization=org, role=Role.MEMBER)
    Membership.objects.create(user=users["member2"], organization=org, role=Role.MEMBER)
    Membership.objects.create(user=users["outsider"], organization=outsider_org, role=Role.OWNER)
    owner_key, _ = make_key(org, name="owner key", created_by=users["owner"])
    member_key, _ = make_key(org, name="member key", created_by=users["member"])
    member2_key, _ = make_key(org, name="member2 key", created_by=users["member2"])
    outsider_key, _ = make_key(outsider_org, name="rival key", created_by=users["outsider"])
    return Team(
        org=org,
        outsider_org=outsider_org,
        owner_key=owner_key,
        member_key=member_key,
        member2_key=member2_key,
        outsider_key=outsider_key,
        generation=_generation("gen-acme-0001", org, owner_key),
        outsider_generation=_generation("gen-rival-0001", outsider_org, outsider_key),
        **users,
    )
