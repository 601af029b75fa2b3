"""Django admin: every model's pages render for staff, the ledger is read-only, grants record who granted."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from django.contrib import admin
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiKey, Organization, User
from billing.models import EntryKind, Hold, LedgerEntry
from billing.selectors import ledger_balance_units
from routing.catalog.loader import catalog_load
from routing.models import Endpoint, Generation, Model, Provider
from switchyard.money import to_units
from tests.factories import MembershipFactory, UserFactory, make_key, make_org

REGISTERED = [User, Organization, ApiKey, Provider, Model, Endpoint, Generation, LedgerEntry, Hold]

CATALOG = {
    "providers": [
        {"slug": "alpha", "name": "Alpha", "api_format": "openai", "base_url": "https://a.example/v1"}
    ],
    "models": [
        {
            "slug": "acme/small",
            "name": "Acme Small",
            "context_length": 8192,
            "endpoints": [
                {
                    "provider": "alpha",
                    "provider_model_id": "small-upstream-id",
                    "pricing": {"prompt": "0.15", "completion": "0.60"},
                }
            ],
        }
    ],
}


@pytest.fixture
def superuser(db) -> User:
    return User.objects.create_superuser(email="root@example.com", password="pw-for-tests-1")


@pytest.fixture
def admin_client(superuser) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


@pytest.fixture
def populated(db, tmp_path, superuser):
    """One row of every registered model, so changelists render real rows."""
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(CATALOG))
    catalog_load([path])
    org = make_org(slug="acme", credits="10")
    MembershipFactory(user=superuser, organization=org)
    key, _ = make_key(org, name="admin test key")
    Generation.objects.create(
        id="gen-admin-1",
        organization=org,
        api_key=key,
        model="acme/small",
        provider="alpha",
        status="success",
        cost_units=to_units("0.001"),
        created_at=timezone.now(),
    )
    Hold.objects.create(
        id="hold-admin-1",
        organization=org,
        api_key=key,
        amount_units=to_units("0.5"),
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    return {"org": org, "key": key}


def _url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def test_the_expected_models_are_registered():
    for model in REGISTERED:
        assert admin.site.is_registered(model), model


def test_every_registered_changelist_renders_for_a_superuser(admin_client, populated):
    for model in admin.site._registry:
        response = admin_client.get(_url(model, "changelist"))
        assert response.status_code == 200, (model, response.status_code)
    for model in REGISTERED:
        assert admin_client.get(_url(model, "changelist"), {"q": "acme"}).status_code == 200, model


def test_change_pages_render(admin_client, populated):
    org, key = populated["org"], populated["key"]
    objects = [
        org,
        key,
        Provider.objects.get(),
        Endpoint.objects.get(),
        Generation.objects.get(),
        Hold.objects.get(),
        LedgerEntry.objects.first(),
        User.objects.get(email="root@example.com"),
    ]
    for obj in objects:
        response = admin_client.get(_url(type(obj), "change", obj.pk))
        assert response.status_code == 200, (type(obj), response.status_code)


def test_model_change_page_shows_endpoints_inline(admin_client, populated):
    model = Model.objects.get(slug="acme/small")
    response = admin_client.get(_url(Model, "change", model.pk))
    assert response.status_code == 200
    html = response.content.decode()
    assert "endpoints-TOTAL_FORMS" in html
    assert "small-upstream-id" in html
    assert "$0.15" in html and "$0.6" in html  # per-million prices shown for humans


def test_api_key_admin_never_shows_a_secret_and_cannot_add(admin_client, populated):
    key = populated["key"]
    response = admin_client.get(_url(ApiKey, "change", key.pk))
    assert key.prefix in response.content.decode()
    assert admin_client.get(_url(ApiKey, "add")).status_code == 403


def test_disabling_a_key_in_the_admin_form_drops_its_cache_entry_at_commit(
    admin_client, populated, django_capture_on_commit_callbacks
):
    from accounts.keys import KeyInfo, _local

    key = populated["key"]
    stale = KeyInfo(
        id=key.pk,
        org_id=key.organization_id,
        org_slug="acme",
        name=key.name,
        usable=True,
        expires_at=None,
        limit_units=None,
        limit_reset="none",
        routing_defaults={},
    )
    _local.set(key.key_hash, stale)
    form = {
        "organization": key.organization_id,
        "name": key.name,
        "limit_units": "",
        "limit_reset": "none",
        "expires_at_0": "",
        "expires_at_1": "",
        "disabled": "on",
    }
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(_url(ApiKey, "change", key.pk), form)
        assert response.status_code == 302, response.content
        # Not before the row is committed: a lookup in between would re-cache the old row.
        assert _local.get(key.key_hash) == stale
    for callback in callbacks:
        callback()
    assert _local.get(key.key_hash) is None
    key.refresh_from_db()
    assert key.disabled


@pytest.mark.parametrize("user_kwargs", [{}, {"is_staff": False, "is_superuser": False}])
def test_non_staff_user_is_redirected_to_login(db, user_kwargs):
    client = Client()
    if user_kwargs:
        client.force_login(UserFactory(**user_kwargs))
    for url in (
        reverse("admin:index"),
        _url(Organization, "changelist"),
        _url(LedgerEntry, "changelist"),
        reverse("admin:billing_ledgerentry_grant"),
    ):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login")), url


def test_ledger_is_read_only(admin_client, populated):
    entry = LedgerEntry.objects.get(organization=populated["org"])
    before = (LedgerEntry.objects.count(), entry.amount_units)

    changelist = admin_client.get(_url(LedgerEntry, "changelist"))
    assert changelist.status_code == 200
    assert changelist.context["has_add_permission"] is False
    assert "delete_selected" not in changelist.content.decode()

    assert admin_client.get(_url(LedgerEntry, "add")).status_code == 403
    assert (
        admin_client.post(_url(LedgerEntry, "add"), {"kind": "grant", "amount_units": 1}).status_code == 403
    )

    view = admin_client.get(_url(LedgerEntry, "change", entry.pk))
    assert view.status_code == 200  # viewable...
    assert 'name="_save"' not in view.content.decode()  # ...but no save button
    assert (
        admin_client.post(
            _url(LedgerEntry, "change", entry.pk), {"amount_units": 999, "kind": "grant"}
        ).status_code
        == 403
    )
    assert admin_client.get(_url(LedgerEntry, "delete", entry.pk)).status_code == 403
    assert admin_client.post(_url(LedgerEntry, "delete", entry.pk), {"post": "yes"}).status_code == 403
    response = admin_client.post(
        _url(LedgerEntry, "changelist"),
        {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"},
    )
    assert response.status_code in (200, 302)

    entry.refresh_from_db()
    assert (LedgerEntry.objects.count(), entry.amount_units) == before


def test_grant_view_records_the_admin_and_moves_the_balance(admin_client, superuser, populated):
    org = populated["org"]
    url = reverse("admin:billing_ledgerentry_grant")
    assert admin_client.get(url).status_code == 200
    start = Organization.objects.get(pk=org.pk).balance_units

    response = admin_client.post(
        url, {"organization": org.pk, "amount": "2.50", "kind": "grant", "reason": "support goodwill"}
    )
    assert response.status_code == 302
    entry = LedgerEntry.objects.get(reason="support goodwill")
    assert entry.created_by == superuser
    assert entry.kind == EntryKind.GRANT
    assert entry.amount_units == to_units("2.5")
    org.refresh_from_db()
    assert org.balance_units == start + to_units("2.5")
    assert org.balance_units == ledger_balance_units(organization_id=org.pk)

    # A negative adjustment is allowed and also attributed.
    admin_client.post(url, {"organization": org.pk, "amount": "-0.5", "kind": "adjustment", "reason": "fix"})
    adjustment = LedgerEntry.objects.get(reason="fix")
    assert adjustment.created_by == superuser and adjustment.amount_units == -to_units("0.5")
    org.refresh_from_db()
    assert org.balance_units == start + to_units("2")


def test_grant_view_rejects_a_non_positive_grant(admin_client, populated):
    org = populated["org"]
    count = LedgerEntry.objects.count()
    response = admin_client.post(
        reverse("admin:billing_ledgerentry_grant"),
        {"organization": org.pk, "amount": "-1", "kind": "grant", "reason": "oops"},
    )
    assert response.status_code == 200  # form redisplayed with the error
    assert "positive" in response.content.decode()
    assert LedgerEntry.objects.count() == count


def test_grant_view_is_for_superusers_only(db, populated):
    staff = UserFactory(is_staff=True)
    client = Client()
    client.force_login(staff)
    count = LedgerEntry.objects.count()
    response = client.post(
        reverse("admin:billing_ledgerentry_grant"),
        {"organization": populated["org"].pk, "amount": "100", "kind": "grant", "reason": "me"},
    )
    assert response.status_code in (302, 403)
    assert LedgerEntry.objects.count() == count
