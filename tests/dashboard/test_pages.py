"""Dashboard and public pages: what they show and what their forms do."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import ApiKey, Invitation, Membership, Role
from billing import services as billing_services
from billing.services import usage_charge
from routing.selectors import usage_by_day
from switchyard.money import to_units
from tests.dashboard.conftest import _generation

pytestmark = pytest.mark.django_db


# --- public pages -----------------------------------------------------------------------------------


def test_landing_shows_live_model_count_and_own_base_url(default_catalog, settings):
    from routing.catalog.snapshot import catalog
    from routing.selectors import catalog_model_count

    settings.ALLOWED_HOSTS = ["router.example.test"]
    response = Client().get("/", HTTP_HOST="router.example.test")
    body = response.content.decode()
    assert response.status_code == 200
    count = int(re.search(r'data-testid="model-count">(\d+)<', body).group(1))
    assert count == catalog_model_count(snapshot=catalog.get_sync()) > 50
    assert "http://router.example.test/api/v1/chat/completions" in body
    assert 'base_url="http://router.example.test/api/v1"' in body  # Python
    assert 'baseURL: "http://router.example.test/api/v1"' in body  # JavaScript


def test_models_browser_filters_and_sorts(default_catalog):
    client = Client()
    full = client.get("/models").content.decode()
    assert "openai/gpt-4o-mini" in full
    partial = client.get("/models", {"q": "gpt-4o-mini"}, HTTP_HX_REQUEST="true")
    text = partial.content.decode()
    assert partial.status_code == 200 and "<html" not in text and "openai/gpt-4o-mini" in text
    assert "anthropic/" not in text
    by_author = client.get("/models", {"author": "anthropic"}, HTTP_HX_REQUEST="true").content.decode()
    assert "anthropic/" in by_author and "openai/" not in by_author
    cheap = client.get(
        "/models", {"max_price": "0.2", "sort": "-price"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "No models match" in cheap or "$" in cheap
    big = client.get("/models", {"context": "1000000"}, HTTP_HX_REQUEST="true").content.decode()
    assert "gpt-4o-mini" not in big
    none = client.get("/models", {"q": "no-such-model-zzz"}, HTTP_HX_REQUEST="true").content.decode()
    assert "No models match these filters" in none


def test_models_sort_by_price(default_catalog):
    from routing.catalog.snapshot import catalog
    from routing.selectors import catalog_browse

    rows = catalog_browse(snapshot=catalog.get_sync(), sort="price")
    prices = [r["prompt"] + r["completion"] for r in rows]
    assert prices == sorted(prices)
    rows = catalog_browse(snapshot=catalog.get_sync(), sort="-context")
    contexts = [r["context_length"] for r in rows]
    assert contexts == sorted(contexts, reverse=True)


def test_model_page_lists_endpoints_with_prices_per_million(default_catalog):
    response = Client().get("/models/openai/gpt-4o-mini")
    body = response.content.decode()
    assert response.status_code == 200
    assert "$0.15" in body and "$0.60" in body  # the catalog's list price per million
    assert "Providers" in body and "Max output" in body and "Uptime" in body
    assert Client().get("/models/nobody/nothing").status_code == 404


def test_docs_page(db):
    body = Client().get("/docs").content.decode()
    assert "Routing options" in body and '"error": {"code": 402' in body and "data_collection" in body


# --- keys ---------------------------------------------------------------------------------------


def test_create_key_shows_secret_once(team):
    client = team.client("member")
    response = client.post(
        "/dashboard/keys/new",
        {
            "name": "ci",
            "limit": "5",
            "limit_reset": "monthly",
            "expires": str(timezone.now().date() + timedelta(days=30)),
        },
    )
    assert response.status_code == 302 and response["Location"] == "/dashboard/keys/created"
    response = client.get(response["Location"])
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    secret = re.search(r'value="(sk-sy-v1-[^"]+)"', response.content.decode()).group(1)
    assert secret not in client.get("/dashboard/keys/created").content.decode()  # popped on first display
    key = ApiKey.objects.get(name="ci")
    assert key.created_by == team.member and key.limit_units == to_units("5") and key.limit_reset == "monthly"
    assert key.expires_at is not None
    listing = client.get("/dashboard/keys/").content.decode()
    assert key.prefix in listing and secret not in listing
    assert "$5.00" in listing  # remaining limit


def test_key_form_errors_are_helpful(team):
    client = team.client("owner")
    response = client.post(
        "/dashboard/keys/new", {"name": "", "limit": "-1", "limit_reset": "hourly", "expires": "2000-01-01"}
    )
    body = response.content.decode()
    assert response.status_code == 400
    assert "This field is required" in body
    assert "greater than or equal to 0" in body
    assert "Select a valid choice" in body
    assert "Pick a date in the future" in body
    reserved = client.post("/dashboard/keys/new", {"name": "playground", "limit_reset": "none"})
    assert "reserved" in reserved.content.decode()


def test_key_usage_and_remaining_in_list(team):
    team.owner_key.limit_units = to_units("1")
    team.owner_key.save()
    usage_charge(
        organization_id=team.org.pk,
        generation_id="gen-x",
        cost_units=to_units("0.25"),
        api_key_id=team.owner_key.pk,
        model="m",
    )
    body = team.client("owner").get("/dashboard/keys/").content.decode()
    assert "$0.25" in body and "$0.75" in body


# --- members and invitations ------------------------------------------------------------------------


def test_invitation_email_and_accept(team, mailoutbox, django_capture_on_commit_callbacks):
    from tests.factories import UserFactory

    with django_capture_on_commit_callbacks(execute=True):
        response = team.client("admin").post(
            "/dashboard/members/", {"email": "New@Example.com", "role": "member"}
        )
    assert response.status_code == 302
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == ["new@example.com"] and "Acme" in mail.subject
    link = re.search(r"http://testserver(/invitations/[^/\s]+/)", mail.body).group(1)
    assert "new@example.com" in team.client("admin").get("/dashboard/members/").content.decode()

    anonymous = Client().get(link)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")

    wrong = team.client("outsider")
    assert "signed in as outsider@example.com" in wrong.get(link).content.decode()
    assert wrong.post(link).status_code == 400
    assert not Membership.objects.filter(user=team.outsider, organization=team.org).exists()

    newcomer = UserFactory(email="new@example.com")
    client = Client()
    client.force_login(newcomer)
    assert client.post(link).status_code == 302
    membership = Membership.objects.get(user=newcomer, organization=team.org)
    assert membership.role == Role.MEMBER
    assert client.get("/dashboard/members/").status_code == 200
    assert "invitation is no longer valid" in client.post(link).content.decode()  # used
    assert client.get("/invitations/not-a-token/").status_code == 404


def test_revoked_and_expired_invitations_cannot_be_used(team, mailoutbox, django_capture_on_commit_callbacks):
    from tests.factories import UserFactory

    client = team.client("owner")
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/dashboard/members/", {"email": "late@example.com", "role": "admin"})
    link = re.search(r"http://testserver(/invitations/[^/\s]+/)", mailoutbox[0].body).group(1)
    invitation = Invitation.objects.get(email="late@example.com")
    assert client.post(f"/dashboard/invitations/{invitation.pk}/revoke").status_code == 302
    late = UserFactory(email="late@example.com")
    other = Client()
    other.force_login(late)
    assert other.post(link).status_code == 400
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/dashboard/members/", {"email": "late@example.com", "role": "admin"})
    link2 = re.search(r"http://testserver(/invitations/[^/\s]+/)", mailoutbox[1].body).group(1)
    Invitation.objects.filter(email="late@example.com", revoked_at__isnull=True).update(
        expires_at=timezone.now()
    )
    assert other.post(link2).status_code == 400
    assert not Membership.objects.filter(user=late).exists()


def test_inviting_an_existing_member_is_a_form_error(team):
    response = team.client("owner").post(
        "/dashboard/members/", {"email": "member@example.com", "role": "member"}
    )
    assert response.status_code == 400 and "already a member" in response.content.decode()


# --- credits ------------------------------------------------------------------------------------------


def test_credits_page_without_stripe(team, monkeypatch):
    monkeypatch.delattr(billing_services, "checkout_session_create", raising=False)
    usage_charge(
        organization_id=team.org.pk,
        generation_id="gen-a",
        cost_units=to_units("0.001"),
        api_key_id=None,
        model="m",
    )
    usage_charge(
        organization_id=team.org.pk,
        generation_id="gen-b",
        cost_units=to_units("0.002"),
        api_key_id=None,
        model="m",
    )
    body = team.client("owner").get("/dashboard/credits/").content.decode()
    assert "ask your operator for credits" in body and "STRIPE" not in body
    assert "$9.997" in body  # 10 granted - 0.003
    assert "Grant" in body and "2 requests" in body and "−$0.003" in body
    redirect = team.client("owner").post("/dashboard/credits/buy", {"amount": "20"})
    assert redirect.status_code == 302


def test_buy_credits_calls_checkout_when_it_exists(team, monkeypatch, settings):
    settings.STRIPE_API_KEY = "sk_test_dashboard"  # purchases show once Stripe is configured
    calls = []

    def checkout_session_create(**kwargs):
        calls.append(kwargs)
        return "https://checkout.example.test/session/1"

    monkeypatch.setattr(billing_services, "checkout_session_create", checkout_session_create, raising=False)
    client = team.client("admin")
    page = client.get("/dashboard/credits/").content.decode()
    assert "Continue to checkout" in page and "$1.10" in page  # 5.5% of the default $20
    response = client.post("/dashboard/credits/buy", {"amount": "50"})
    assert response.status_code == 302 and response["Location"] == "https://checkout.example.test/session/1"
    assert calls[0]["amount_usd"] == Decimal("50") and calls[0]["organization"] == team.org
    assert calls[0]["user"] == team.admin and calls[0]["success_url"].endswith(
        "/dashboard/credits/?checkout=success"
    )
    bad = client.post("/dashboard/credits/buy", {"amount": "1"})
    assert bad.status_code == 400 and "greater than or equal to 5" in bad.content.decode()
    assert len(calls) == 1
    member_page = team.client("member").get("/dashboard/credits/").content.decode()
    assert "Only owners and admins can buy credits" in member_page


def test_fee_partial(team):
    body = team.client("owner").get("/dashboard/credits/fee", {"amount": "100"}).content.decode()
    assert "$5.50" in body and "$105.50" in body
    small = team.client("owner").get("/dashboard/credits/fee", {"amount": "5"}).content.decode()
    assert "$0.80" in small
    for junk in ("abc", "NaN", "Infinity", "-5"):
        assert team.client("owner").get("/dashboard/credits/fee", {"amount": junk}).status_code == 200


def test_auto_topup_hidden_without_model_fields(team):
    from accounts.models import Organization

    if hasattr(Organization, "auto_topup_threshold_units"):
        pytest.skip("Organization has auto top-up fields on this branch")
    assert "Auto top-up" not in team.client("owner").get("/dashboard/credits/").content.decode()
    assert team.client("owner").post("/dashboard/credits/auto-topup", {}).status_code == 403


# --- activity -------------------------------------------------------------------------------------------


def test_activity_filters_pagination_and_csv(team):
    now = timezone.now()
    for i in range(55):
        _generation(
            f"gen-many-{i:03d}",
            team.org,
            team.member_key,
            model="openai/gpt-4o-mini",
            provider="openai",
            created_at=now - timedelta(minutes=i),
        )
    _generation(
        "gen-err-1", team.org, team.owner_key, status="error", provider="groq", cost_units=0, error="boom"
    )
    client = team.client("member")
    page1 = client.get("/dashboard/activity/").content.decode()
    assert "Page 1 of 2" in page1
    only_errors = client.get(
        "/dashboard/activity/", {"status": "error"}, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="activity-table"
    )
    text = only_errors.content.decode()
    assert "<html" not in text and "gen-err-1" in text and "gen-many-000" not in text
    by_key = client.get("/dashboard/activity/", {"key": team.owner_key.pk}).content.decode()
    assert "gen-acme-0001" in by_key and "gen-many-001" not in by_key
    by_provider = client.get("/dashboard/activity/", {"provider": "openai"}).content.decode()
    assert "gen-many-001" in by_provider and "gen-acme-0001" not in by_provider
    csv = b"".join(
        client.get("/dashboard/activity/export.csv", {"model": "openai/gpt-4o-mini"}).streaming_content
    ).decode()
    lines = csv.strip().splitlines()
    assert lines[0].startswith("id,created_at,model,provider") and len(lines) == 56
    whole = b"".join(client.get("/dashboard/activity/export.csv").streaming_content).decode()
    assert "gen-acme-0001" in whole and ",0.0000132," in whole
    detail = client.get("/dashboard/activity/gen-err-1").content.decode()
    assert "boom" in detail


def test_usage_by_day_groups_and_sums_exactly(team):
    today = timezone.now()
    _generation(
        "gen-d1",
        team.org,
        team.owner_key,
        model="a/x",
        provider="p1",
        cost_units=to_units("0.1"),
        created_at=today,
    )
    _generation(
        "gen-d2",
        team.org,
        team.owner_key,
        model="a/x",
        provider="p2",
        cost_units=to_units("0.2"),
        created_at=today - timedelta(days=1),
    )
    data = usage_by_day(organization_id=team.org.pk, days=7, group_by="model")
    assert len(data["labels"]) == 7 and data["labels"][-1] == today.date().isoformat()
    series = {s["name"]: s for s in data["series"]}
    assert series["a/x"]["spend"][-1] == Decimal("0.1") and series["a/x"]["spend"][-2] == Decimal("0.2")
    assert series["a/x"]["requests"][-1] == 1
    assert data["totals"]["spend"] == Decimal("0.3") + Decimal("0.0000132")
    providers = usage_by_day(organization_id=team.org.pk, days=7, group_by="provider")
    assert {s["name"] for s in providers["series"]} == {"p1", "p2", "simulated"}
    outsider = usage_by_day(organization_id=team.outsider_org.pk, days=7)
    assert {s["name"] for s in outsider["series"]} == {"switchyard/sim-1"}
    page = (
        team.client("owner").get("/dashboard/activity/", {"group": "provider", "days": "7"}).content.decode()
    )
    assert 'id="chart-data"' in page and '"p1"' in page


def test_activity_empty_state(team):
    body = team.client("outsider").get("/dashboard/activity/")
    from routing.models import Generation

    Generation.objects.filter(organization=team.outsider_org).delete()
    body = team.client("outsider").get("/dashboard/activity/").content.decode()
    assert "No requests yet" in body


def _week_payload(body: str) -> dict:
    found = re.search(r'<script id="chart-data" type="application/json">(.*?)</script>', body, re.S)
    assert found, "no chart data on the page"
    return json.loads(found.group(1))


def test_overview_week_chart_zero_fills_and_sums_this_org_exactly(team):
    from billing.selectors import spend_since

    now = timezone.now()
    today = now.date()
    in_week = [  # (id, days ago, cost in USD); gen-acme-0001 from the fixture is today's first, $0.0000132
        ("gen-w-today", 0, "0.1234567"),
        ("gen-w-2a", 2, "0.0000001"),
        ("gen-w-2b", 2, "1.25"),
        ("gen-w-6", 6, "0.3"),
    ]
    for gen_id, ago, usd in in_week:
        _generation(
            gen_id, team.org, team.owner_key, cost_units=to_units(usd), created_at=now - timedelta(days=ago)
        )
    _generation(
        "gen-w-old", team.org, team.owner_key, cost_units=to_units("9"), created_at=now - timedelta(days=7)
    )
    _generation("gen-w-rival", team.outsider_org, team.outsider_key, cost_units=to_units("5"), created_at=now)
    for gen_id, _, usd in [("gen-acme-0001", 0, "0.0000132"), *in_week]:
        usage_charge(
            organization_id=team.org.pk,
            generation_id=gen_id,
            cost_units=to_units(usd),
            api_key_id=team.owner_key.pk,
            model="switchyard/sim-1",
        )

    response = team.client("member").get("/dashboard/")
    week = _week_payload(response.content.decode())
    assert week["labels"] == [(today - timedelta(days=6 - i)).isoformat() for i in range(7)]
    (series,) = week["series"]
    # Oldest first; days without traffic are zeros, the 7-days-ago request and the rival's are left out.
    assert series["spend"] == ["0.3", "0", "0", "0", "1.2500001", "0", "0.1234699"]
    assert series["requests"] == [1, 0, 0, 0, 2, 0, 2]
    spend = [Decimal(v) for v in series["spend"]]
    assert sum(spend) == Decimal("1.6734700")
    assert sum(spend) == spend_since(organization_id=team.org.pk, since=now - timedelta(days=7))  # the ledger
    assert response.context["week_totals"] == {"spend": Decimal("1.67347"), "tokens": 5 * 42, "requests": 5}
    section = response.content.decode().split('data-testid="overview-chart"', 1)[1].split("</section>", 1)[0]
    assert 'id="chart-week"' in section and "No requests yet" not in section
    assert "vendor/chart-4.6.1.umd.min.js" in response.content.decode()

    rival = _week_payload(team.client("outsider").get("/dashboard/").content.decode())
    assert rival["series"][0]["spend"] == ["0"] * 6 + ["5.0000132"]
    assert rival["series"][0]["requests"] == [0] * 6 + [2]


def test_overview_week_chart_without_recent_traffic_is_a_flat_week(team):
    from routing.models import Generation

    Generation.objects.filter(pk="gen-acme-0001").update(created_at=timezone.now() - timedelta(days=30))
    body = team.client("owner").get("/dashboard/").content.decode()
    (series,) = _week_payload(body)["series"]
    assert series["spend"] == ["0"] * 7 and series["requests"] == [0] * 7
    assert "No requests in the last 7 days" in body


def test_overview_new_organisation_gets_the_empty_state(team):
    from routing.models import Generation

    Generation.objects.filter(organization=team.outsider_org).delete()
    body = team.client("outsider").get("/dashboard/").content.decode()
    section = body.split('data-testid="overview-chart"', 1)[1].split("</section>", 1)[0]
    assert "Spend and requests, last 7 days" in section and "No requests yet" in section
    assert 'href="/dashboard/keys/new"' in section and 'href="/dashboard/playground/"' in section
    assert 'href="#first-request"' in section and 'id="first-request"' in body  # the curl example
    assert "<canvas" not in body and 'id="chart-data"' not in body and "chart-4.6.1" not in body


# --- settings and profile -------------------------------------------------------------------------------


def test_settings_save_routing_defaults_and_invalidate_keys(
    team, default_catalog, monkeypatch, django_capture_on_commit_callbacks
):
    from accounts import services

    invalidated = []
    real = services.organization_keys_invalidate
    monkeypatch.setattr(
        services, "organization_keys_invalidate", lambda **kw: (invalidated.append(kw), real(**kw))
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = team.client("admin").post(
            "/dashboard/settings/",
            {"name": "Acme Inc", "ignore": ["openai", "groq"], "data_collection": "deny"},
        )
    assert response.status_code == 302
    team.org.refresh_from_db()
    assert team.org.name == "Acme Inc"
    assert team.org.routing_defaults == {"ignore": ["groq", "openai"], "data_collection": "deny"}
    assert invalidated == [{"organization": team.org}]
    page = team.client("member").get("/dashboard/settings/").content.decode()
    assert "Provider keys (BYOK)" in page and "Only owners and admins" in page
    with django_capture_on_commit_callbacks(execute=True):
        team.client("owner").post("/dashboard/settings/", {"name": "Acme Inc", "data_collection": "allow"})
    team.org.refresh_from_db()
    assert team.org.routing_defaults == {}
    bad = team.client("owner").post("/dashboard/settings/", {"name": "", "data_collection": "maybe"})
    assert bad.status_code == 400


def test_profile_name(team):
    client = team.client("member")
    assert client.post("/dashboard/profile/", {"name": "Mia Member"}).status_code == 302
    team.member.refresh_from_db()
    assert team.member.name == "Mia Member"
    assert "Mia Member" in client.get("/dashboard/").content.decode()


# --- accounts (allauth) ---------------------------------------------------------------------------------


def test_signup_requires_email_verification(db, mailoutbox):
    client = Client()
    response = client.post(
        "/accounts/signup/",
        {
            "email": "fresh@example.com",
            "password1": "a-Long-passphrase-9",
            "password2": "a-Long-passphrase-9",
        },
    )
    assert response.status_code == 302 and response["Location"] == "/accounts/confirm-email/"
    assert client.get("/dashboard/").status_code == 302
    link = re.search(r"http://testserver(/accounts/confirm-email/[^\s]+)", mailoutbox[0].body).group(1)
    page = client.get(link)
    assert page.status_code == 200 and b"Confirm" in page.content
    confirmed = client.post(link)
    assert confirmed.status_code == 302
    assert client.get("/dashboard/")["Location"] == "/dashboard/organizations/new"
    client.post("/accounts/logout/")
    login = Client().post(
        "/accounts/login/", {"login": "fresh@example.com", "password": "a-Long-passphrase-9"}
    )
    assert login.status_code == 302 and login["Location"] == "/dashboard/"


def test_login_page_is_styled_and_labelled(db):
    body = Client().get("/accounts/login/").content.decode()
    assert "css/app.css" in body and '<label for="id_login">' in body and '<label for="id_password">' in body
    body = Client().get("/accounts/signup/").content.decode()
    assert '<label for="id_email">' in body and "auth-card" in body
    assert Client().get("/accounts/password/reset/").status_code == 200


def test_password_reset_email(db, mailoutbox):
    from tests.factories import UserFactory

    UserFactory(email="forgot@example.com")
    Client().post("/accounts/password/reset/", {"email": "forgot@example.com"})
    assert mailoutbox and "/accounts/password/reset/key/" in mailoutbox[0].body


def test_grant_credits_then_balance_on_overview(team):
    billing_services.credits_grant(organization=team.org, amount_usd=Decimal("2.5"), reason="bonus")
    body = team.client("member").get("/dashboard/").content.decode()
    assert "$12.50" in body


def test_starter_credits_are_granted_once_per_new_organisation(db, settings):
    from accounts.services import organization_create
    from billing.models import LedgerEntry
    from billing.selectors import balance_get
    from billing.services import starter_credits_grant

    settings.SWITCHYARD_STARTER_CREDITS = "1.25"
    org = organization_create(slug="fresh-start")
    assert balance_get(organization=org) == Decimal("1.25")
    starter_credits_grant(organization=org)  # a second call (a retry) grants nothing more
    assert balance_get(organization=org) == Decimal("1.25")
    assert LedgerEntry.objects.filter(organization=org).count() == 1
    settings.SWITCHYARD_STARTER_CREDITS = "0"
    assert balance_get(organization=organization_create(slug="no-start")) == Decimal("0")
