"""Management commands: what they create, what they print last, and how they fail."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from io import StringIO

import pytest
import yaml
from django.conf import settings
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts.models import ApiKey, Membership, Organization, Role, User
from billing.models import EntryKind, LedgerEntry
from billing.selectors import ledger_balance_units
from switchyard.money import to_units

KEY_RE = re.compile(r"^sk-sy-v1-[A-Za-z0-9_-]{43,}$")


def _run(*args: str, **options: object) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def _last_line(text: str) -> str:
    lines = text.rstrip("\n").splitlines()
    assert lines, "nothing printed"
    return lines[-1]


def _client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def _data(client: APIClient, path: str) -> dict:
    response = client.get(path)
    assert response.status_code == 200, response.content
    return json.loads(response.content, parse_float=Decimal)["data"]


def _balance(slug: str) -> Decimal:
    org = Organization.objects.get(slug=slug)
    assert org.balance_units == ledger_balance_units(organization_id=org.pk)
    return Decimal(org.balance_units) / 10**12


@pytest.fixture
def acme(db) -> str:
    out, _ = _run("create_org", "acme", "--owner", "o@x.com", "--credits", "5")
    return _last_line(out)


# --- create_org -----------------------------------------------------------------------------------


def test_create_org_prints_a_working_key_last_and_grants_credits(acme):
    assert KEY_RE.match(acme), acme
    org = Organization.objects.get(slug="acme")
    owner = User.objects.get(email="o@x.com")
    assert not owner.has_usable_password()
    assert Membership.objects.get(user=owner, organization=org).role == Role.OWNER
    assert ApiKey.objects.filter(organization=org).count() == 1
    assert _balance("acme") == 5

    client = _client(acme)
    assert "label" in _data(client, "/api/v1/key")
    assert _data(client, "/api/v1/credits") == {"total_credits": 5, "total_usage": 0}


def test_create_org_prints_the_key_alone(db):
    out, _ = _run("create_org", "solo", "--owner", "s@x.com")
    assert out.strip() == _last_line(out)  # stdout holds the key and nothing else
    assert KEY_RE.match(out.strip())
    assert _balance("solo") == 0


def test_create_org_with_a_duplicate_slug_fails_and_changes_nothing(acme):
    counts = (
        Organization.objects.count(),
        User.objects.count(),
        ApiKey.objects.count(),
        LedgerEntry.objects.count(),
    )
    with pytest.raises(CommandError) as excinfo:
        _run("create_org", "acme", "--owner", "other@x.com", "--credits", "100")
    assert "acme" in str(excinfo.value)
    assert (
        Organization.objects.count(),
        User.objects.count(),
        ApiKey.objects.count(),
        LedgerEntry.objects.count(),
    ) == counts
    assert _balance("acme") == 5


@pytest.mark.parametrize(
    "args",
    [
        ["Not A Slug", "--owner", "a@x.com"],
        ["fine", "--owner", "a@x.com", "--credits", "lots"],
        ["fine", "--owner", "a@x.com", "--credits", "-5"],
        ["fine", "--owner", "a@x.com", "--credits", "0.0000000000001"],
    ],
)
def test_create_org_rejects_bad_input_without_writing(db, args):
    with pytest.raises(CommandError):
        _run("create_org", *args)
    assert Organization.objects.count() == 0
    assert ApiKey.objects.count() == 0
    assert LedgerEntry.objects.count() == 0


# --- create_api_key -------------------------------------------------------------------------------


def test_create_api_key_with_a_limit(acme):
    out, _ = _run("create_api_key", "--org", "acme", "--name", "ci", "--limit", "2.5")
    secret = _last_line(out)
    assert KEY_RE.match(secret)
    assert secret != acme
    key = ApiKey.objects.get(organization__slug="acme", name="ci")
    assert key.limit_units == to_units("2.5")
    data = _data(_client(secret), "/api/v1/key")
    assert data["limit"] == Decimal("2.5")
    assert data["limit_remaining"] == Decimal("2.5")
    assert "ci" in data["label"]


def test_create_api_key_without_limit(acme):
    out, _ = _run("create_api_key", "--org", "acme")
    assert _data(_client(_last_line(out)), "/api/v1/key")["limit"] is None


@pytest.mark.parametrize(
    "args",
    [
        ["--org", "nobody"],
        ["--org", "acme", "--limit", "abc"],
        ["--org", "acme", "--limit", "-1"],
        ["--org", "acme", "--limit", "0.0000000000001"],
        ["--org", "acme", "--limit", "1e400"],
    ],
)
def test_create_api_key_rejects_bad_input(acme, args):
    count = ApiKey.objects.count()
    with pytest.raises(CommandError):
        _run("create_api_key", *args)
    assert ApiKey.objects.count() == count


# --- grant_credits --------------------------------------------------------------------------------


def test_grant_credits_prints_the_new_balance(acme):
    out, _ = _run("grant_credits", "--org", "acme", "--amount", "1.25", "--reason", "r")
    assert _last_line(out) == "6.25"
    assert _balance("acme") == Decimal("6.25")
    entry = LedgerEntry.objects.get(organization__slug="acme", reason="r")
    assert entry.kind == EntryKind.GRANT and entry.amount_units == to_units("1.25")

    out, _ = _run("grant_credits", "--org", "acme", "--amount", "3.75", "--reason", "again")
    assert _last_line(out) == "10"


@pytest.mark.parametrize("amount", ["abc", "-1", "0", "0.0000000000001", "NaN", "Infinity", "1e400"])
def test_grant_credits_rejects_bad_amounts(acme, amount):
    count = LedgerEntry.objects.count()
    with pytest.raises(CommandError):
        _run("grant_credits", "--org", "acme", "--amount", amount, "--reason", "r")
    assert LedgerEntry.objects.count() == count
    assert _balance("acme") == 5


def test_grant_credits_needs_a_known_org_and_a_reason(acme):
    with pytest.raises(CommandError):
        _run("grant_credits", "--org", "nobody", "--amount", "1", "--reason", "r")
    with pytest.raises(CommandError):
        _run("grant_credits", "--org", "acme", "--amount", "1", "--reason", "  ")
    assert _balance("acme") == 5


# --- seed_demo ------------------------------------------------------------------------------------


def test_seed_demo_is_idempotent_but_prints_a_new_key_each_time(db):
    first = _last_line(_run("seed_demo")[0])
    second = _last_line(_run("seed_demo")[0])
    assert KEY_RE.match(first) and KEY_RE.match(second)
    assert first != second

    assert Organization.objects.count() == 1
    org = Organization.objects.get()
    admins = User.objects.filter(is_superuser=True, is_staff=True)
    assert admins.count() == 1
    assert admins.get().has_usable_password()
    assert Membership.objects.filter(organization=org, user=admins.get()).count() == 1
    assert LedgerEntry.objects.filter(organization=org, kind=EntryKind.GRANT).count() == 1
    assert _balance(org.slug) == settings.SWITCHYARD_DEMO_CREDITS
    assert ApiKey.objects.filter(organization=org).count() == 2

    for secret in (first, second):
        assert _data(_client(secret), "/api/v1/credits")["total_credits"] == settings.SWITCHYARD_DEMO_CREDITS


def test_seed_demo_quiet_prints_only_the_key(db):
    out, err = _run("seed_demo", "--quiet")
    assert KEY_RE.match(out.strip())
    assert err == ""


# --- load_catalog ---------------------------------------------------------------------------------


def test_load_catalog_prints_a_summary(db, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "providers": [{"slug": "p", "name": "P", "api_format": "simulated"}],
                "models": [
                    {
                        "slug": "a/m",
                        "name": "M",
                        "context_length": 1000,
                        "endpoints": [
                            {
                                "provider": "p",
                                "provider_model_id": "m",
                                "pricing": {"prompt": "1", "completion": "2"},
                            }
                        ],
                    }
                ],
            }
        )
    )
    out, _ = _run("load_catalog", str(path))
    assert _last_line(out) == (
        "Loaded 1 file(s): 1 providers, 1 models, 1 endpoints (3 created, 0 updated, 0 disabled by --prune)."
    )
