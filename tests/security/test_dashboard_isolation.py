"""Every dashboard view, for every kind of visitor: the insider roles get exactly their rights, another
organisation's user gets 404 for the insider's objects (and sees only their own organisation's data
elsewhere), anonymous visitors are sent to log in.

The cases are keyed by URL name and checked against the URLconf: a new dashboard view without a case
here fails `test_every_dashboard_view_has_a_case`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from accounts.models import ApiKey, Invitation, Membership, Role
from routing.models import ProviderKey
from tests.security.conftest import INSIDER_BYOK_SECRET, World

pytestmark = pytest.mark.django_db

OK, LOGIN = "ok", "login"  # any 2xx, or a redirect that is not to the login page


@dataclass(frozen=True)
class Op:
    name: str  # URL name
    method: str
    url: Callable[[World], str]
    owner: Any = OK
    admin: Any = OK
    member: Any = OK
    outsider: Any = OK  # acting from their own organisation, with the insider's ids in the URL
    data: Callable[[World], dict[str, Any]] = field(default=lambda w: {})
    public: bool = False
    stripe: bool = False  # needs STRIPE_API_KEY set (auto top-up is only offered then)

    @property
    def id(self) -> str:
        return f"{self.name}:{self.method}"


def _r(name: str, *args: Any, query: str = "") -> Callable[[World], str]:
    def build(w: World) -> str:
        values = [a(w) if callable(a) else a for a in args]
        return reverse(name, args=values) + query

    return build


OPS = [
    # Public pages: the same answer for everyone, signed in or not.
    Op("home", "get", _r("home"), public=True),
    Op("models", "get", _r("models"), public=True),
    Op("model", "get", _r("model", "switchyard", "no-such-model"), public=True),
    Op("docs", "get", _r("docs"), public=True),
    Op("favicon", "get", _r("favicon"), public=True),
    # A wrong invitation token is a 404 for everyone (the token is the capability).
    Op("invite-accept", "get", _r("invite-accept", "not-a-token"), 404, 404, 404, 404),
    Op("dashboard", "get", _r("dashboard")),
    Op("org-create", "get", _r("org-create")),
    Op("org-switch", "post", _r("org-switch"), outsider=404, data=lambda w: {"organization": w.org.pk}),
    Op("members", "get", _r("members")),
    Op(
        "members",
        "post",
        _r("members"),
        member=403,
        data=lambda w: {"email": "new@example.com", "role": "member"},
    ),
    Op(
        "member-role",
        "post",
        _r("member-role", lambda w: w.member2_membership.pk),
        member=403,
        outsider=404,
        data=lambda w: {"role": "admin"},
    ),
    Op(
        "member-remove",
        "post",
        _r("member-remove", lambda w: w.member2_membership.pk),
        member=403,
        outsider=404,
    ),
    # Leaving acts on the caller's own membership only (the last owner is refused with a message).
    Op("member-leave", "post", _r("member-leave")),
    Op(
        "invitation-revoke",
        "post",
        _r("invitation-revoke", lambda w: w.invitation.pk),
        member=403,
        outsider=404,
    ),
    Op("keys", "get", _r("keys")),
    Op("key-new", "get", _r("key-new")),
    Op("key-new", "post", _r("key-new"), data=lambda w: {"name": "fresh", "limit_reset": "none"}),
    # The one-time secret page shows only what this session's own key form put there.
    Op("key-created", "get", _r("key-created")),
    # Members manage only their own keys: someone else's is a 404 to them, as to outsiders.
    Op("key-edit", "get", _r("key-edit", lambda w: w.owner_key.pk), member=404, outsider=404),
    Op(
        "key-edit",
        "post",
        _r("key-edit", lambda w: w.owner_key.pk),
        member=404,
        outsider=404,
        data=lambda w: {"name": "hijacked", "limit_reset": "none"},
    ),
    Op("key-action", "post", _r("key-action", lambda w: w.owner_key.pk, "disable"), member=404, outsider=404),
    Op("credits", "get", _r("credits")),
    Op("credits-fee", "get", _r("credits-fee", query="?amount=20")),
    Op("credits-buy", "post", _r("credits-buy"), member=403, data=lambda w: {"amount": "20"}),
    Op(
        "credits-auto-topup",
        "post",
        _r("credits-auto-topup"),
        member=403,
        stripe=True,
        data=lambda w: {"threshold": "5", "amount": "20"},
    ),
    Op("activity", "get", _r("activity")),
    Op("activity-csv", "get", _r("activity-csv")),
    Op("generation", "get", _r("generation", "gen-acme-0001"), outsider=404),
    Op("playground", "get", _r("playground")),
    Op("playground-key", "post", _r("playground-key")),
    Op("settings", "get", _r("settings")),
    Op(
        "settings",
        "post",
        _r("settings"),
        member=403,
        data=lambda w: {"name": "Renamed", "data_collection": "deny"},
    ),
    Op("byok", "get", _r("byok")),
    Op(
        "byok",
        "post",
        _r("byok"),
        member=403,
        data=lambda w: {
            "provider": w.provider.pk,
            "api_key": "sk-replacement-key-0123456789",
            "allow_platform_fallback": "on",
        },
    ),
    Op(
        "byok-action",
        "post",
        _r("byok-action", lambda w: w.byok_key.pk, "fallback-off"),
        member=403,
        outsider=404,
    ),
    Op("profile", "get", _r("profile")),
    Op("audit", "get", _r("audit"), admin=403, member=403),
]

# What the insider organisation has that nobody else may see.
INSIDER_MARKERS = [
    "owner key",
    "member key",
    "gen-acme-0001",
    "owner@example.com",
    "admin@example.com",
    "invitee@example.com",
    "Skunkworks",
    INSIDER_BYOK_SECRET[-4:],
]


def _dashboard_url_names() -> set[str]:
    names: set[str] = set()

    def walk(patterns: list[Any], prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern) and p.name:
                route = prefix + str(p.pattern)
                if not route.startswith(("admin/", "accounts/", "api/")):
                    names.add(p.name)

    walk(get_resolver().url_patterns, "")
    return names


def test_every_dashboard_view_has_a_case():
    missing = _dashboard_url_names() - {op.name for op in OPS}
    assert not missing, f"add isolation cases for these dashboard views: {sorted(missing)}"


def _insider_state(w: World) -> Any:
    org = type(w.org).objects.get(pk=w.org.pk)
    return (
        org.name,
        org.routing_defaults,
        sorted(ApiKey.objects.filter(organization=org).values_list("pk", "name", "disabled", "deleted_at")),
        sorted(Membership.objects.filter(organization=org).values_list("pk", "user_id", "role")),
        sorted(Invitation.objects.filter(organization=org).values_list("pk", "revoked_at")),
        sorted(
            ProviderKey.objects.filter(organization=org).values_list("pk", "last4", "allow_platform_fallback")
        ),
    )


def _call(client: Client, op: Op, w: World) -> Any:
    url = op.url(w)
    return getattr(client, op.method)(url, op.data(w))


def _check(response: Any, expected: Any, label: str) -> None:
    status = response.status_code
    if expected == OK:
        location = response.get("Location", "")
        assert status < 400 and "/accounts/login/" not in location, (label, status, location)
    elif expected == LOGIN:
        assert status == 302 and response["Location"].startswith("/accounts/login/"), (label, status)
    else:
        assert status == expected, (label, status)


def _body(response: Any) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


@pytest.fixture
def stripe_on(settings):
    settings.STRIPE_API_KEY = "sk_test_not_used_by_these_views"


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.id)
@pytest.mark.parametrize("who", ["owner", "admin", "member"])
def test_insider_roles_get_exactly_their_rights(world, who, op, request):
    if op.stripe:
        request.getfixturevalue("stripe_on")
    expected = _call(Client(), op, world).status_code if op.public else getattr(op, who)
    response = _call(world.client(who), op, world)
    _check(response, expected, f"{who} {op.id}")


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.id)
def test_outsider_gets_404_and_learns_nothing(world, op, request):
    if op.stripe:
        request.getfixturevalue("stripe_on")
    before = _insider_state(world)
    public_status = _call(Client(), op, world).status_code if op.public else None
    response = _call(world.client("outsider"), op, world)
    _check(response, public_status or op.outsider, f"outsider {op.id}")
    assert _insider_state(world) == before, f"outsider {op.id} changed the insider's organisation"
    body = _body(response)
    leaked = [m for m in INSIDER_MARKERS if m in body]
    assert not leaked, f"outsider {op.id} saw {leaked}"


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.id)
def test_anonymous_is_sent_to_log_in(world, op):
    response = _call(Client(), op, world)
    _check(response, response.status_code if op.public else LOGIN, f"anonymous {op.id}")
    assert response.status_code < 500
    if op.public:
        assert not [m for m in INSIDER_MARKERS if m in _body(response)]


def _page(response: Any) -> str:
    return re.sub(r'"X-CSRFToken": "[^"]+"', "", response.content.decode())  # masked anew per response


def test_not_found_pages_do_not_reveal_existence(world):
    """Another organisation's objects and objects that never existed answer alike."""
    client = world.client("outsider")
    for name, theirs, nobody in [
        ("key-edit", [world.owner_key.pk], [10**9]),
        ("generation", ["gen-acme-0001"], ["gen-nobody-0001"]),
        ("byok-action", [world.byok_key.pk, "delete"], [10**9, "delete"]),
        ("member-remove", [world.member2_membership.pk], [10**9]),
        ("invitation-revoke", [world.invitation.pk], [10**9]),
    ]:
        method = client.get if name in ("key-edit", "generation") else client.post
        a, b = method(reverse(name, args=theirs)), method(reverse(name, args=nobody))
        assert a.status_code == b.status_code == 404, name
        assert _page(a) == _page(b), name


def test_invitation_token_joins_only_the_invited_address(world):
    token = "tok-" + "x" * 40
    invitation = Invitation.objects.create(
        organization=world.org,
        email="invitee2@example.com",
        role=Role.ADMIN,
        token_hash=hashlib.sha256(token.encode()).hexdigest(),
        expires_at=world.invitation.expires_at,
    )
    client = world.client("outsider")
    response = client.post(reverse("invite-accept", args=[token]))
    assert response.status_code == 400
    assert not Membership.objects.filter(user=world.outsider, organization=world.org).exists()
    invitation.refresh_from_db()
    assert invitation.accepted_at is None
