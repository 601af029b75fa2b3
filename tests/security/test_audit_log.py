"""The audit log: security-relevant actions are recorded with who, what, when and from where, never with
a secret; owners read their organisation's trail in the dashboard, staff read everything in admin, and
nobody can edit or delete it."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from accounts.audit import audit_record
from accounts.models import ApiKey, AuditEvent, Invitation, Membership
from tests.factories import UserFactory
from tests.security.conftest import INSIDER_BYOK_SECRET

pytestmark = pytest.mark.django_db


def _events(org, action):
    return AuditEvent.objects.filter(organization=org, action=action)


def test_dashboard_actions_are_recorded_with_actor_and_address(world):
    owner = world.client("owner")
    AuditEvent.objects.all().delete()  # the fixture's own setup events

    created = owner.post(
        reverse("key-new"), {"name": "ci deploy", "limit": "2", "limit_reset": "daily"}, follow=True
    )
    secret = re.search(r"sk-sy-v1-[A-Za-z0-9_\-]{43,}", created.content.decode()).group(0)
    key = ApiKey.objects.get(name="ci deploy")
    owner.post(
        reverse("key-edit", args=[key.pk]), {"name": "ci deploy", "limit": "5", "limit_reset": "daily"}
    )
    owner.post(reverse("key-action", args=[key.pk, "disable"]))
    owner.post(reverse("key-action", args=[key.pk, "enable"]))
    owner.post(reverse("key-action", args=[key.pk, "delete"]))
    owner.post(reverse("members"), {"email": "newbie@example.com", "role": "admin"})
    invitation = Invitation.objects.get(email="newbie@example.com")
    owner.post(reverse("invitation-revoke", args=[invitation.pk]))
    owner.post(reverse("member-role", args=[world.member2_membership.pk]), {"role": "admin"})
    owner.post(reverse("member-remove", args=[world.member2_membership.pk]))
    owner.post(
        reverse("byok"),
        {
            "provider": world.provider.pk,
            "api_key": INSIDER_BYOK_SECRET + "NEW",
            "allow_platform_fallback": "",
        },
    )
    owner.post(reverse("byok-action", args=[world.byok_key.pk, "fallback-on"]))
    owner.post(reverse("byok-action", args=[world.byok_key.pk, "delete"]))
    owner.post(reverse("settings"), {"name": world.org.name, "data_collection": "deny"})

    expected = [
        "api_key.created",
        "api_key.updated",
        "api_key.disabled",
        "api_key.enabled",
        "api_key.deleted",
        "invitation.created",
        "invitation.revoked",
        "member.role_changed",
        "api_key.deleted",  # member2's key, revoked with the membership
        "member.removed",
        "provider_key.saved",
        "provider_key.updated",
        "provider_key.deleted",
        "organization.settings_changed",
    ]
    events = list(AuditEvent.objects.order_by("id"))
    assert [e.action for e in events] == expected
    for event in events:
        assert event.organization_id == world.org.pk
        assert event.actor == world.owner and event.actor_email == "owner@example.com"
        assert event.ip_address == "127.0.0.1"
    by_action = {e.action: e for e in events}
    assert by_action["api_key.created"].target_id == str(key.pk)
    assert by_action["api_key.created"].metadata["limit_reset"] == "daily"
    assert by_action["member.role_changed"].metadata == {"from": "member", "to": "admin"}
    assert by_action["invitation.created"].metadata == {"email": "newbie@example.com", "role": "admin"}
    assert by_action["provider_key.saved"].target_label == "zenith …" + (INSIDER_BYOK_SECRET + "NEW")[-4:]
    assert by_action["organization.settings_changed"].metadata["to"] == {"data_collection": "deny"}
    # No secret anywhere in the trail.
    trail = str(list(AuditEvent.objects.values()))
    assert secret not in trail and INSIDER_BYOK_SECRET not in trail


def test_members_and_roles_from_invitations_and_org_creation(world):
    owner = world.client("owner")
    owner.post(reverse("members"), {"email": "joiner@example.com", "role": "member"})
    from accounts.services import invitation_accept

    joiner = UserFactory(email="joiner@example.com")
    invitation = Invitation.objects.get(email="joiner@example.com")
    token = "tok-joiner"
    import hashlib

    Invitation.objects.filter(pk=invitation.pk).update(token_hash=hashlib.sha256(token.encode()).hexdigest())
    invitation_accept(token=token, user=joiner)
    accepted = _events(world.org, "invitation.accepted").get()
    assert accepted.actor == joiner and accepted.metadata["new_member"] is True

    solo = Client()
    solo.force_login(joiner)
    solo.post(reverse("org-create"), {"name": "Joiner Labs"})
    org = Membership.objects.get(user=joiner, organization__name="Joiner Labs").organization
    assert set(AuditEvent.objects.filter(organization=org).values_list("action", "actor_email")) == {
        ("organization.created", "joiner@example.com"),
        ("member.added", "joiner@example.com"),
    }


def test_credit_grants_are_recorded_with_the_granting_admin(world):
    root = UserFactory(email="root@example.com", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(root)
    response = client.post(
        reverse("admin:billing_ledgerentry_grant"),
        {"organization": world.org.pk, "amount": "12.5", "reason": "goodwill", "kind": "grant"},
    )
    assert response.status_code == 302
    event = _events(world.org, "credits.granted").filter(actor=root).get()
    assert event.metadata == {"kind": "grant", "amount_usd": "12.5", "reason": "goodwill"}
    assert event.target_type == "ledgerentry"


def test_commands_record_the_system_as_actor(db):
    out = StringIO()
    call_command(
        "create_org", "cli-org", "--owner", "ops@example.com", "--credits", "3", stdout=out, stderr=StringIO()
    )
    actions = list(
        AuditEvent.objects.filter(organization__slug="cli-org").values_list("action", "actor_email")
    )
    assert ("organization.created", "") in actions and ("credits.granted", "") in actions
    assert ("api_key.created", "ops@example.com") in actions  # made for the owner, on their behalf
    assert out.getvalue().strip() not in str(list(AuditEvent.objects.values()))


def test_playground_keys_do_not_flood_the_log(world):
    client = world.client("member")
    for _ in range(3):
        client.post(reverse("playground-key"))
    assert not AuditEvent.objects.filter(target_label__startswith="Playground").exists()


def test_owners_read_their_trail_in_the_dashboard(world):
    world.client("owner").post(reverse("key-action", args=[world.member_key.pk, "disable"]))
    world.client("outsider").post(reverse("key-action", args=[world.outsider_key.pk, "disable"]))
    page = world.client("owner").get(reverse("audit"))
    body = page.content.decode()
    assert page.status_code == 200
    assert "API key disabled" in body and "member key" in body and "owner@example.com" in body
    assert "rival key" not in body and "outsider@example.com" not in body
    keys_only = world.client("owner").get(reverse("audit") + "?action=api_key.").content.decode()
    assert "member key" in keys_only and "Provider key added" not in keys_only
    for who in ("admin", "member"):
        assert world.client(who).get(reverse("audit")).status_code == 403
    assert "Audit log" in world.client("owner").get(reverse("dashboard")).content.decode()
    assert "Audit log" not in world.client("admin").get(reverse("dashboard")).content.decode()


def test_staff_read_everything_in_admin_and_nobody_edits_it(world):
    root = UserFactory(email="root@example.com", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(root)
    page = client.get("/admin/accounts/auditevent/").content.decode()
    assert "provider_key.saved" in page or "Provider key added or replaced" in page
    assert "rival" in page and "acme" in page  # every organisation's events
    event = AuditEvent.objects.filter(organization=world.org).first()
    assert client.get(f"/admin/accounts/auditevent/{event.pk}/change/").status_code == 200
    assert client.get("/admin/accounts/auditevent/add/").status_code == 403
    assert client.post(f"/admin/accounts/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.post(
        "/admin/accounts/auditevent/", {"action": "delete_selected", "_selected_action": [event.pk]}
    ).status_code in (200, 302)
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_staff_logins_are_recorded(db):
    staff = UserFactory(email="root@example.com", is_staff=True, is_superuser=True)
    customer = UserFactory(email="dev@example.com")
    client = Client(REMOTE_ADDR="192.0.2.10")
    response = client.post(
        "/admin/login/?next=/admin/", {"username": staff.email, "password": "correct-horse-battery"}
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="staff.login")
    assert event.actor == staff and event.ip_address == "192.0.2.10" and event.organization is None
    assert event.metadata["path"] == "/admin/login/"
    Client().force_login(customer)
    assert AuditEvent.objects.filter(action="staff.login").count() == 1


def test_audit_record_refuses_unknown_actions_and_scrubs_secrets(world):
    with pytest.raises(ValueError):
        audit_record(action="something.else", organization=world.org)
    secret = "sk-sy-v1-" + "z" * 43
    event = audit_record(
        action="api_key.updated",
        organization=world.org,
        target=world.owner_key,
        metadata={"note": f"pasted {secret}", "nested": [{"k": f"Bearer {secret}"}]},
    )
    event.refresh_from_db()
    assert secret not in str(event.metadata) and "[redacted]" in event.metadata["note"]
    assert event.actor is None and event.actor_email == ""  # no request: the system acted


def test_admin_actions_on_keys_are_recorded_with_the_staff_member(world):
    root = UserFactory(email="root@example.com", is_staff=True, is_superuser=True)
    client = Client(REMOTE_ADDR="198.51.100.7")
    client.force_login(root)
    response = client.post(
        "/admin/accounts/apikey/", {"action": "disable_keys", "_selected_action": [world.member_key.pk]}
    )
    assert response.status_code == 302
    event = _events(world.org, "api_key.disabled").get()
    assert event.actor == root and event.ip_address == "198.51.100.7"
    assert event.target_id == str(world.member_key.pk)
    client.post(
        f"/admin/accounts/apikey/{world.owner_key.pk}/change/",
        {
            "organization": world.org.pk,
            "name": "renamed by staff",
            "limit_units": "",
            "limit_reset": "none",
            "expires_at_0": "",
            "expires_at_1": "",
        },
    )
    changed = _events(world.org, "api_key.updated").get()
    assert changed.actor == root and "name" in changed.metadata["fields"]
