"""Who may see and do what in the dashboard: owners/admins manage, members use, outsiders get 404."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import ApiKey, Invitation, Membership, Role

pytestmark = pytest.mark.django_db

PAGES = [
    "/dashboard/",
    "/dashboard/keys/",
    "/dashboard/keys/new",
    "/dashboard/credits/",
    "/dashboard/activity/",
    "/dashboard/activity/export.csv",
    "/dashboard/activity/gen-acme-0001",
    "/dashboard/playground/",
    "/dashboard/members/",
    "/dashboard/settings/",
    "/dashboard/profile/",
    "/dashboard/organizations/new",
    "/dashboard/credits/fee?amount=20",
]


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_is_sent_to_login(path):
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("who", ["owner", "admin", "member"])
@pytest.mark.parametrize("path", PAGES)
def test_every_role_can_open_every_page(team, who, path):
    response = team.client(who).get(path)
    assert response.status_code == 200, (who, path, response.status_code)


def test_user_without_organisation_is_asked_to_create_one(db):
    from tests.factories import UserFactory

    client = Client()
    client.force_login(UserFactory())
    response = client.get("/dashboard/")
    assert response.status_code == 302 and response["Location"] == "/dashboard/organizations/new"
    page = client.get("/dashboard/organizations/new")
    assert b"Welcome to Switchyard" in page.content
    created = client.post("/dashboard/organizations/new", {"name": "Acme Research"})
    assert created.status_code == 302 and created["Location"] == "/dashboard/keys/"
    assert client.get("/dashboard/").status_code == 200


def test_org_create_makes_a_unique_slug(team):
    client = team.client("outsider")
    client.post("/dashboard/organizations/new", {"name": "Acme"})
    org = Membership.objects.filter(user=team.outsider, organization__name="Acme").get().organization
    assert org.slug == "acme-2"
    assert client.post("/dashboard/organizations/new", {"name": "  "}).status_code == 200  # form error


# --- outsiders: 404 for everything of another organisation ---------------------------------------


@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/dashboard/keys/{owner_key}/edit"),
        ("post", "/dashboard/keys/{owner_key}/edit"),
        ("post", "/dashboard/keys/{owner_key}/disable"),
        ("post", "/dashboard/keys/{owner_key}/enable"),
        ("post", "/dashboard/keys/{owner_key}/delete"),
        ("get", "/dashboard/activity/gen-acme-0001"),
        ("post", "/dashboard/members/{owner_membership}/role"),
        ("post", "/dashboard/members/{owner_membership}/remove"),
        ("post", "/dashboard/invitations/{invitation}/revoke"),
    ],
)
def test_outsider_gets_404_for_insiders_objects(team, method, path):
    invitation = Invitation.objects.create(
        organization=team.org, email="x@example.com", token_hash="h" * 64, expires_at="2999-01-01T00:00Z"
    )
    owner_membership = Membership.objects.get(user=team.owner, organization=team.org)
    url = path.format(
        owner_key=team.owner_key.pk, owner_membership=owner_membership.pk, invitation=invitation.pk
    )
    response = getattr(team.client("outsider"), method)(
        url, {"role": "member", "name": "x", "limit_reset": "none"}
    )
    assert response.status_code == 404
    team.owner_key.refresh_from_db()
    assert not team.owner_key.disabled and team.owner_key.deleted_at is None
    assert Membership.objects.filter(pk=owner_membership.pk, role=Role.OWNER).exists()


def test_outsider_cannot_switch_into_another_org(team):
    response = team.client("outsider").post("/dashboard/organizations/switch", {"organization": team.org.pk})
    assert response.status_code == 404


def test_outsider_never_sees_insider_data(team):
    client = team.client("outsider")
    for path in ("/dashboard/keys/", "/dashboard/activity/", "/dashboard/members/", "/dashboard/credits/"):
        body = client.get(path).content.decode()
        assert "owner key" not in body and "gen-acme-0001" not in body and "owner@example.com" not in body
    csv = b"".join(client.get("/dashboard/activity/export.csv").streaming_content).decode()
    assert "gen-acme-0001" not in csv and "gen-rival-0001" in csv


def test_switching_org_changes_what_you_see(team):
    Membership.objects.create(user=team.outsider, organization=team.org, role=Role.MEMBER)
    client = team.client("outsider")
    client.post("/dashboard/organizations/switch", {"organization": team.outsider_org.pk})
    assert "rival key" in client.get("/dashboard/keys/").content.decode()
    assert client.post("/dashboard/organizations/switch", {"organization": team.org.pk}).status_code == 302
    body = client.get("/dashboard/keys/").content.decode()
    assert "rival key" not in body
    assert client.get("/dashboard/activity/gen-acme-0001").status_code == 200
    assert client.get("/dashboard/activity/gen-rival-0001").status_code == 404


# --- members: their own keys only, no management ---------------------------------------------------


def test_member_sees_only_own_keys(team):
    body = team.client("member").get("/dashboard/keys/").content.decode()
    assert "member key" in body and "owner key" not in body and "member2 key" not in body
    owner_view = team.client("owner").get("/dashboard/keys/").content.decode()
    assert "member key" in owner_view and "owner key" in owner_view and "member2 key" in owner_view


@pytest.mark.parametrize("action", ["edit", "disable", "enable", "delete"])
def test_member_cannot_manage_others_keys(team, action):
    client = team.client("member")
    for key in (team.owner_key, team.member2_key):
        response = client.post(
            f"/dashboard/keys/{key.pk}/{action}", {"name": "hijack", "limit_reset": "none"}
        )
        assert response.status_code == 404
        key.refresh_from_db()
        assert key.name != "hijack" and not key.disabled and key.deleted_at is None


def test_member_manages_own_key(team):
    client = team.client("member")
    key = team.member_key
    assert client.post(f"/dashboard/keys/{key.pk}/disable").status_code == 302
    key.refresh_from_db()
    assert key.disabled
    assert client.post(f"/dashboard/keys/{key.pk}/enable").status_code == 302
    key.refresh_from_db()
    assert not key.disabled
    response = client.post(
        f"/dashboard/keys/{key.pk}/edit", {"name": "renamed", "limit": "2.5", "limit_reset": "daily"}
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.name == "renamed" and key.limit_units == 2_500_000_000_000 and key.limit_reset == "daily"
    assert client.post(f"/dashboard/keys/{key.pk}/delete").status_code == 302
    key.refresh_from_db()
    assert key.deleted_at is not None


def test_admin_manages_anyones_key(team):
    client = team.client("admin")
    assert client.post(f"/dashboard/keys/{team.member_key.pk}/disable").status_code == 302
    team.member_key.refresh_from_db()
    assert team.member_key.disabled


def test_member_cannot_manage_members_billing_or_settings(team):
    client = team.client("member")
    member2 = Membership.objects.get(user=team.member2, organization=team.org)
    assert (
        client.post("/dashboard/members/", {"email": "new@example.com", "role": "member"}).status_code == 403
    )
    assert client.post(f"/dashboard/members/{member2.pk}/role", {"role": "admin"}).status_code == 403
    assert client.post(f"/dashboard/members/{member2.pk}/remove").status_code == 403
    assert client.post("/dashboard/credits/buy", {"amount": "20"}).status_code == 403
    assert client.post("/dashboard/credits/auto-topup", {"threshold": "5", "amount": "20"}).status_code == 403
    assert (
        client.post("/dashboard/settings/", {"name": "Pwned", "data_collection": "deny"}).status_code == 403
    )
    team.org.refresh_from_db()
    assert team.org.name != "Pwned" and team.org.routing_defaults == {}
    assert not Invitation.objects.exists()
    member2.refresh_from_db()
    assert member2.role == Role.MEMBER
    page = client.get("/dashboard/members/").content.decode()
    assert "Send invitation" not in page


def test_admin_cannot_touch_owners_or_make_owners(team):
    client = team.client("admin")
    owner = Membership.objects.get(user=team.owner, organization=team.org)
    member = Membership.objects.get(user=team.member, organization=team.org)
    assert client.post(f"/dashboard/members/{owner.pk}/role", {"role": "member"}).status_code == 403
    assert client.post(f"/dashboard/members/{owner.pk}/remove").status_code == 403
    assert client.post(f"/dashboard/members/{member.pk}/role", {"role": "owner"}).status_code == 403
    assert client.post(f"/dashboard/members/{member.pk}/role", {"role": "admin"}).status_code == 302
    member.refresh_from_db()
    assert member.role == Role.ADMIN
    response = client.post("/dashboard/members/", {"email": "boss@example.com", "role": "owner"})
    assert response.status_code == 400  # not a choice for admins
    assert not Invitation.objects.exists()


def test_last_owner_cannot_leave_or_be_demoted(team):
    client = team.client("owner")
    owner = Membership.objects.get(user=team.owner, organization=team.org)
    second = Membership.objects.get(user=team.admin, organization=team.org)
    client.post(f"/dashboard/members/{owner.pk}/role", {"role": "admin"})
    owner.refresh_from_db()
    assert owner.role == Role.OWNER
    client.post(f"/dashboard/members/{second.pk}/role", {"role": "owner"})
    second.refresh_from_db()
    assert second.role == Role.OWNER
    client.post(f"/dashboard/members/{owner.pk}/role", {"role": "member"})
    owner.refresh_from_db()
    assert owner.role == Role.MEMBER


def test_owner_removes_member(team):
    member = Membership.objects.get(user=team.member2, organization=team.org)
    assert team.client("owner").post(f"/dashboard/members/{member.pk}/remove").status_code == 302
    assert not Membership.objects.filter(pk=member.pk).exists()
    assert team.client("member2").get("/dashboard/").status_code == 302  # no organisation left


def test_members_can_read_activity_and_generation(team):
    client = team.client("member")
    assert "gen-acme-0001" in client.get("/dashboard/activity/").content.decode()
    detail = client.get("/dashboard/activity/gen-acme-0001").content.decode()
    assert "simulated" in detail and "Routing attempts" in detail


def test_playground_key_is_per_user_hidden_and_reused(team):
    client = team.client("member")
    first = client.post("/dashboard/playground/key").json()["key"]
    again = client.post("/dashboard/playground/key").json()["key"]
    assert first == again and first.startswith("sk-sy-v1-")
    other = team.client("member2").post("/dashboard/playground/key").json()["key"]
    assert other != first
    playground = ApiKey.objects.filter(name="Playground", deleted_at__isnull=True)
    assert playground.count() == 2 and all(k.expires_at is not None for k in playground)
    # Hidden from its user's key list; owners see (and can revoke) every playground key, labelled.
    assert (
        "Playground" not in team.client("member").get("/dashboard/keys/").content.decode().split("<main")[1]
    )
    assert "Playground key" in team.client("owner").get("/dashboard/keys/").content.decode().split("<main")[1]
    page = client.get("/dashboard/playground/").content.decode()
    assert first not in page
    assert client.get("/dashboard/playground/key").status_code == 405


def test_outsider_playground_key_belongs_to_own_org(team):
    team.client("outsider").post("/dashboard/playground/key")
    assert ApiKey.objects.get(name="Playground").organization == team.outsider_org
