"""The provider keys (BYOK) pages and admin: add, replace, fallback, delete; owners and admins only;
the key is shown once never again (only its last four characters) and never leaves the server."""

from __future__ import annotations

import pytest
from django.test import Client

from routing.models import Provider, ProviderKey
from routing.services import provider_key_save
from switchyard.crypto import decrypt
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

URL = "/dashboard/settings/provider-keys/"
KEY = "sk-proj-ownerkey-9aB8cD7eF6gH5iJ4kL3mN2"
KEY2 = "sk-proj-replaced-1qW2eR3tY4uI5oP6aS7dF8"


@pytest.fixture
def providers(db):
    openai = Provider.objects.create(
        slug="openai", name="OpenAI", api_format="openai", base_url="https://api.openai.com/v1"
    )
    anthropic = Provider.objects.create(
        slug="anthropic", name="Anthropic", api_format="anthropic", base_url="https://api.anthropic.com/v1"
    )
    sim = Provider.objects.create(
        slug="simulated", name="Simulator", api_format="simulated", base_url="sim://"
    )
    return {"openai": openai, "anthropic": anthropic, "simulated": sim}


def _add(client: Client, provider: Provider, key: str = KEY, fallback: bool = True):
    data = {"provider": provider.pk, "api_key": key}
    if fallback:
        data["allow_platform_fallback"] = "on"
    return client.post(URL, data)


def test_owner_adds_a_key_that_is_shown_once_never_again(team, providers):
    client = team.client("owner")
    response = _add(client, providers["openai"])
    assert response.status_code == 302 and response["Location"] == URL
    row = ProviderKey.objects.get(organization=team.org)
    assert row.provider == providers["openai"] and row.allow_platform_fallback
    assert row.last4 == KEY[-4:] and KEY not in row.encrypted_key and decrypt(row.encrypted_key) == KEY
    assert row.created_by == team.owner
    page = client.get(URL).content.decode()  # carries the flash message too
    assert f"ending in {KEY[-4:]}" in page and "will not be shown again" in page
    assert f"…{KEY[-4:]}" in page
    assert KEY not in page and KEY[:-4] not in page and row.encrypted_key not in page
    settings_page = client.get("/dashboard/settings/").content.decode()
    assert f"…{KEY[-4:]}" in settings_page and KEY not in settings_page and URL in settings_page


def test_saving_again_replaces_the_key(team, providers):
    client = team.client("admin")
    _add(client, providers["openai"])
    assert _add(client, providers["openai"], KEY2, fallback=False).status_code == 302
    row = ProviderKey.objects.get(organization=team.org)
    assert decrypt(row.encrypted_key) == KEY2 and row.last4 == KEY2[-4:] and not row.allow_platform_fallback
    page = client.get(URL).content.decode()
    assert f"…{KEY2[-4:]}" in page and f"…{KEY[-4:]}" not in page and "Fail (your key only)" in page


def test_form_errors_never_echo_the_key(team, providers):
    client = team.client("owner")
    no_provider = client.post(URL, {"api_key": KEY})
    assert no_provider.status_code == 400 and KEY not in no_provider.content.decode()
    simulated = _add(client, providers["simulated"])
    assert simulated.status_code == 400 and KEY not in simulated.content.decode()
    short = _add(client, providers["openai"], "abc")
    assert short.status_code == 400 and "8 to 1000 characters" in short.content.decode()
    spaced = _add(client, providers["openai"], "sk-proj with-space-123")
    assert spaced.status_code == 400 and "cannot contain spaces" in spaced.content.decode()
    assert not ProviderKey.objects.exists()


def test_a_key_that_is_not_printable_ascii_gets_a_clear_form_error(team, providers):
    """A look-alike character (Cyrillic, a non-breaking hyphen) could never be sent in a header; saved,
    every request with it failed (and counted against the provider's shared health)."""
    client = team.client("owner")
    for key in ("sk-proj-ключ-9aB8cD7eF6gH5iJ4", "sk-proj\u2011ownerkey-9aB8cD7eF6"):
        response = _add(client, providers["openai"], key)
        page = response.content.decode()
        assert response.status_code == 400 and "printable ASCII only" in page
        assert key not in page
    assert not ProviderKey.objects.exists()


def test_simulated_provider_is_not_offered(team, providers):
    page = team.client("owner").get(URL).content.decode()
    assert f'value="{providers["openai"].pk}"' in page
    assert f'value="{providers["simulated"].pk}"' not in page


def test_members_see_providers_but_cannot_manage(team, providers):
    row = provider_key_save(organization=team.org, provider=providers["openai"], api_key=KEY)
    member = team.client("member")
    page = member.get(URL)
    text = page.content.decode()
    assert page.status_code == 200 and f"…{KEY[-4:]}" in text and KEY not in text
    assert "Only owners and admins" in text and 'name="api_key"' not in text
    assert _add(member, providers["anthropic"]).status_code == 403
    assert member.post(f"{URL}{row.pk}/delete").status_code == 403
    assert member.post(f"{URL}{row.pk}/fallback-off").status_code == 403
    row.refresh_from_db()
    assert row.allow_platform_fallback and ProviderKey.objects.count() == 1


def test_fallback_toggle_and_delete(team, providers):
    row = provider_key_save(organization=team.org, provider=providers["openai"], api_key=KEY)
    client = team.client("admin")
    assert client.post(f"{URL}{row.pk}/fallback-off").status_code == 302
    row.refresh_from_db()
    assert not row.allow_platform_fallback
    assert client.post(f"{URL}{row.pk}/fallback-on").status_code == 302
    row.refresh_from_db()
    assert row.allow_platform_fallback
    assert client.post(f"{URL}{row.pk}/rotate").status_code == 404
    assert client.get(f"{URL}{row.pk}/delete").status_code == 405
    assert client.post(f"{URL}{row.pk}/delete").status_code == 302
    assert not ProviderKey.objects.exists()


def test_other_organisations_keys_are_404(team, providers):
    row = provider_key_save(organization=team.org, provider=providers["openai"], api_key=KEY)
    outsider = team.client("outsider")
    assert outsider.post(f"{URL}{row.pk}/delete").status_code == 404
    assert outsider.post(f"{URL}{row.pk}/fallback-off").status_code == 404
    assert f"…{KEY[-4:]}" not in outsider.get(URL).content.decode()
    assert ProviderKey.objects.filter(pk=row.pk, allow_platform_fallback=True).exists()
    # Saving a key in the outsider's organisation does not touch the insider's.
    assert _add(outsider, providers["openai"], KEY2).status_code == 302
    assert decrypt(ProviderKey.objects.get(pk=row.pk).encrypted_key) == KEY


def test_nav_links_to_provider_keys(team):
    page = team.client("member").get("/dashboard/").content.decode()
    assert f'href="{URL}"' in page and "Provider keys" in page


def test_admin_never_shows_the_key(team, providers):
    admin = UserFactory(email="root@example.com", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    response = client.post(
        "/admin/routing/providerkey/add/",
        {
            "organization": team.org.pk,
            "provider": providers["anthropic"].pk,
            "api_key": KEY,
            "allow_platform_fallback": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    row = ProviderKey.objects.get(organization=team.org, provider=providers["anthropic"])
    assert decrypt(row.encrypted_key) == KEY and row.created_by == admin
    pages = [
        client.get("/admin/routing/providerkey/").content.decode(),
        client.get(f"/admin/routing/providerkey/{row.pk}/change/").content.decode(),
        client.get("/admin/routing/providerkey/", {"q": team.org.slug}).content.decode(),
    ]
    assert f"…{KEY[-4:]}" in pages[0] and f"…{KEY[-4:]}" in pages[1]
    for page in pages:
        assert KEY not in page and row.encrypted_key not in page
    # Editing without typing a key keeps it; typing one replaces it.
    change = f"/admin/routing/providerkey/{row.pk}/change/"
    assert client.post(change, {"api_key": ""}).status_code == 302
    row.refresh_from_db()
    assert decrypt(row.encrypted_key) == KEY and not row.allow_platform_fallback
    assert client.post(change, {"api_key": KEY2, "allow_platform_fallback": "on"}).status_code == 302
    row.refresh_from_db()
    assert decrypt(row.encrypted_key) == KEY2 and row.allow_platform_fallback
    bad = client.post(change, {"api_key": "short"})
    assert bad.status_code == 200 and "8 to 1000 characters" in bad.content.decode()
    # Adding without a key is refused.
    missing = client.post(
        "/admin/routing/providerkey/add/", {"organization": team.org.pk, "provider": providers["openai"].pk}
    )
    assert missing.status_code == 200 and "needs the key itself" in missing.content.decode()
