"""Membership ends access: a removed (or leaving) member's keys, playground keys included, stop working
within the key-cache window, the revocations are in the audit log, and owners see and revoke every key
of their organisation (playground keys labelled as such)."""

from __future__ import annotations

import time

import httpx
import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from accounts import services
from accounts.models import ApiKey, AuditEvent, Membership, Role
from tests.factories import UserFactory, make_key, make_org

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = {"model": "switchyard/sim-1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def _chat(live, secret: str) -> int:  # type: ignore[no-untyped-def]
    r = httpx.post(
        f"{live.api}/chat/completions", json=HELLO, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    )
    return r.status_code


def _team():  # type: ignore[no-untyped-def]
    org = make_org(credits="5")
    owner, member = UserFactory(email="boss@example.com"), UserFactory(email="leaver@example.com")
    Membership.objects.create(user=owner, organization=org, role=Role.OWNER)
    membership = Membership.objects.create(user=member, organization=org, role=Role.MEMBER)
    return org, owner, member, membership


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def _gone_within_window(live, secrets: list[str], since: float) -> float:  # type: ignore[no-untyped-def]
    """Poll until every secret gets a 401; fail if that takes longer than the key-cache window."""
    window = float(settings.SWITCHYARD_KEY_CACHE_SECONDS)
    pending = set(secrets)
    while pending:
        pending = {s for s in pending if _chat(live, s) != 401}
        elapsed = time.monotonic() - since
        if pending and elapsed > window + 1.0:
            raise AssertionError(f"{len(pending)} key(s) still work {elapsed:.1f} s after the removal")
        time.sleep(0.05)
    return time.monotonic() - since


def test_removed_members_keys_and_playground_key_get_401_within_the_cache_window(live, sim_catalog):
    org, owner, member, membership = _team()
    _, own_secret = make_key(org, name="leaver's laptop", created_by=member)
    playground = _client(member).post(reverse("playground-key")).json()["key"]
    _, owner_secret = make_key(org, name="boss key", created_by=owner)
    for secret in (own_secret, playground, owner_secret):
        assert _chat(live, secret) == 200  # warm: every key is in the hot path's cache now

    removed_at = time.monotonic()
    response = _client(owner).post(reverse("member-remove", args=[membership.pk]))
    assert response.status_code == 302
    _gone_within_window(live, [own_secret, playground], removed_at)
    assert _chat(live, owner_secret) == 200  # other people's keys are untouched

    revoked = ApiKey.objects.filter(organization=org, created_by=member)
    assert revoked.count() == 2 and all(k.deleted_at is not None for k in revoked)
    events = AuditEvent.objects.filter(organization=org, action="api_key.deleted")
    assert sorted(e.target_id for e in events) == sorted(str(k.pk) for k in revoked)
    assert all(e.actor == owner and e.metadata.get("reason") == "member_removed" for e in events)
    removal = AuditEvent.objects.get(organization=org, action="member.removed")
    assert removal.metadata["revoked_keys"] == 2


def test_a_member_who_leaves_loses_their_keys(live, sim_catalog):
    org, owner, member, _ = _team()
    _, secret = make_key(org, name="mine", created_by=member)
    assert _chat(live, secret) == 200
    left_at = time.monotonic()
    response = _client(member).post(reverse("member-leave"))
    assert response.status_code == 302
    assert not Membership.objects.filter(user=member, organization=org).exists()
    _gone_within_window(live, [secret], left_at)
    event = AuditEvent.objects.get(organization=org, action="api_key.deleted")
    assert event.metadata.get("reason") == "member_left" and event.actor == member
    # The last owner cannot leave (the organisation would have nobody to manage it).
    assert _client(owner).post(reverse("member-leave")).status_code == 302
    assert Membership.objects.filter(user=owner, organization=org, role=Role.OWNER).exists()


def test_deleting_a_user_revokes_their_keys_in_every_organisation(db):
    org, _, member, _ = _team()
    other = make_org(credits=None)
    Membership.objects.create(user=member, organization=other, role=Role.OWNER)
    key_a, _ = make_key(org, created_by=member)
    key_b, _ = make_key(other, created_by=member)
    member.delete()
    for key in (key_a, key_b):
        key.refresh_from_db()
        assert key.deleted_at is not None and key.disabled


def test_owner_sees_and_revokes_every_key_including_playground_keys(db):
    org, owner, member, _ = _team()
    _client(member).post(reverse("playground-key"))
    playground = ApiKey.objects.get(organization=org, name="Playground", created_by=member)
    page = _client(owner).get(reverse("keys")).content.decode().split("<main")[1]
    assert f'data-key-id="{playground.pk}"' in page
    assert "Playground key" in page and "leaver@example.com" in page
    response = _client(owner).post(reverse("key-action", args=[playground.pk, "delete"]))
    assert response.status_code == 302
    playground.refresh_from_db()
    assert playground.deleted_at is not None
    event = AuditEvent.objects.get(organization=org, action="api_key.deleted", target_id=str(playground.pk))
    assert event.actor == owner
    # A plain member still sees only their own keys, and no playground key of anyone else.
    _client(owner).post(reverse("playground-key"))
    mine = _client(member).get(reverse("keys")).content.decode().split("<main")[1]
    boss_playground = ApiKey.objects.get(organization=org, name="Playground", created_by=owner)
    assert f'data-key-id="{boss_playground.pk}"' not in mine


def test_membership_remove_service_revokes_only_that_members_keys_in_that_org(db):
    org, owner, member, membership = _team()
    elsewhere = make_org(credits=None)
    Membership.objects.create(user=member, organization=elsewhere, role=Role.OWNER)
    here, _ = make_key(org, created_by=member)
    there, _ = make_key(elsewhere, created_by=member)
    actor = Membership.objects.get(user=owner, organization=org)
    services.membership_remove(actor=actor, target=membership)
    here.refresh_from_db()
    there.refresh_from_db()
    assert here.deleted_at is not None
    assert there.deleted_at is None  # still a member there
