"""Fixtures for the security tests: the dashboard's team (owner, admin, members, an outsider with their
own organisation) plus the objects every view can point at: a BYOK key, an invitation, audit events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Invitation, Membership
from routing.models import Provider, ProviderKey
from tests.dashboard.conftest import Team, team  # noqa: F401  (the shared dashboard fixture)

INSIDER_BYOK_SECRET = "sk-insider-byok-0123456789abcdefWXYZ"
OUTSIDER_BYOK_SECRET = "sk-outsider-byok-0123456789abcdefQRST"


@dataclass
class World:
    team: Team
    provider: Provider
    byok_key: ProviderKey
    outsider_byok_key: ProviderKey
    invitation: Invitation
    owner_membership: Membership
    member2_membership: Membership

    def __getattr__(self, name: str):  # team.<x> as world.<x>
        return getattr(self.team, name)


@pytest.fixture
def world(team) -> World:  # noqa: F811
    from routing import services as routing_services

    team.org.name = "Acme Skunkworks"  # a name no page would contain by chance
    team.org.save(update_fields=["name"])

    provider = Provider.objects.create(
        slug="zenith", name="Zenith AI", api_format="openai", base_url="http://127.0.0.1:9/v1"
    )
    byok = routing_services.provider_key_save(
        organization=team.org, provider=provider, api_key=INSIDER_BYOK_SECRET, user=team.owner
    )
    outsider_byok = routing_services.provider_key_save(
        organization=team.outsider_org, provider=provider, api_key=OUTSIDER_BYOK_SECRET, user=team.outsider
    )
    invitation = Invitation.objects.create(
        organization=team.org,
        email="invitee@example.com",
        token_hash="a" * 64,
        invited_by=team.owner,
        expires_at=timezone.now() + timedelta(days=3),
    )
    return World(
        team=team,
        provider=provider,
        byok_key=byok,
        outsider_byok_key=outsider_byok,
        invitation=invitation,
        owner_membership=Membership.objects.get(user=team.owner, organization=team.org),
        member2_membership=Membership.objects.get(user=team.member2, organization=team.org),
    )


EMBED_CATALOG = """
models:
  - slug: switchyard/sim-embed
    name: "Switchyard: Simulated embeddings"
    context_length: 8192
    output_modalities: [embeddings]
    endpoints:
      - provider: simulated
        provider_model_id: sim-embed
        pricing: {prompt: "0.02", completion: "0"}
        context_length: 8192
"""


@pytest.fixture
def security_catalog(transactional_db, tmp_path):
    """The simulated chat models (tests/data/sim_catalog.yaml) plus a simulated embedding model."""
    from routing.catalog.loader import catalog_load
    from routing.catalog.snapshot import catalog
    from tests.conftest import ROOT

    extra = tmp_path / "sim_embed.yaml"
    extra.write_text(EMBED_CATALOG)
    summary = catalog_load([ROOT / "tests" / "data" / "sim_catalog.yaml", extra])
    catalog.clear()
    return summary
