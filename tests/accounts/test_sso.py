"""Single sign-on end to end: allauth's social accounts against a fake OpenID Connect provider on 127.0.0.1.

Django's test client plays the browser on our side and every hop into the provider is a real HTTP
request (discovery, authorisation, token, JWKS, userinfo), so PKCE, client authentication and the
id_token are exercised as with a real identity provider. One happy path runs in chromium against the
live server. Google and GitHub cannot be reached from here: their configuration is what is tested.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount, SocialApp
from django.contrib.auth import SESSION_KEY
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from accounts.models import Membership, User
from switchyard.sso import social_providers
from tests.conftest import ROOT
from tests.dashboard.test_browser import CHROMIUM, CHROMIUM_ARGS, Shooter, orm
from tests.factories import UserFactory
from tests.fakes.oidc_provider import FakeOIDC, s256

PROVIDER_ID = "fake"
CALLBACK = f"/accounts/oidc/{PROVIDER_ID}/login/callback/"
SSO_ENV = (
    "SWITCHYARD_OIDC_PROVIDERS",
    "SWITCHYARD_GOOGLE_CLIENT_ID",
    "SWITCHYARD_GOOGLE_CLIENT_SECRET",
    "SWITCHYARD_GITHUB_CLIENT_ID",
    "SWITCHYARD_GITHUB_CLIENT_SECRET",
)


@pytest.fixture
def no_sso_env(monkeypatch):
    for name in SSO_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def fake_idp():
    with FakeOIDC() as idp:
        idp.allow_redirect_uri(f"http://testserver{CALLBACK}")
        yield idp


def configure_oidc(monkeypatch, settings, idp: FakeOIDC, **extra: object) -> None:
    """What an operator does: SWITCHYARD_OIDC_PROVIDERS in the environment, read by the settings."""
    entry = {
        "id": PROVIDER_ID,
        "name": "Fake IdP",
        "server_url": idp.issuer,
        "client_id": idp.client_id,
        "secret": idp.client_secret,
        **extra,
    }
    monkeypatch.setenv("SWITCHYARD_OIDC_PROVIDERS", json.dumps([entry]))
    settings.SOCIALACCOUNT_PROVIDERS = social_providers()


@pytest.fixture
def sso(no_sso_env, settings, fake_idp):
    configure_oidc(no_sso_env, settings, fake_idp)
    return fake_idp


def start_sign_in(client: Client, provider_id: str = PROVIDER_ID, next_url: str | None = None) -> str:
    """Press "Continue with ...": the POST the button sends; returns the provider's authorisation URL."""
    path = f"/accounts/oidc/{provider_id}/login/"
    if next_url:
        path += f"?next={next_url}"
    response = client.post(path)
    assert response.status_code == 302, response.content[:500]
    return response["Location"]


def visit_provider(authorize_url: str) -> str:
    """The browser's hop to the provider (real HTTP); returns where the provider sends it back."""
    response = httpx.get(authorize_url, follow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    return response.headers["Location"]


def back_to_us(client: Client, callback_url: str):
    parts = urlsplit(callback_url)
    assert f"{parts.scheme}://{parts.netloc}" == "http://testserver"
    return client.get(f"{parts.path}?{parts.query}", follow=True)


def sign_in(client: Client, provider_id: str = PROVIDER_ID):
    return back_to_us(client, visit_provider(start_sign_in(client, provider_id)))


def unique_email(name: str) -> str:
    """An address no earlier run used: allauth allows one verification mail per address per 3 minutes,
    counted in the cache, which in full mode is Redis and outlives a test run."""
    return f"{name}-{secrets.token_hex(4)}@example.com"


def signed_in_user_id(client: Client) -> int | None:
    value = client.session.get(SESSION_KEY)
    return int(value) if value is not None else None


# --- (a) a new user --------------------------------------------------------------------------------------


def test_a_new_user_signs_in_and_creates_an_organisation(db, client, sso):
    sso.sign_in_as(sub="new-1", email="newcomer@idp.test", email_verified=True, name="New Comer")
    response = sign_in(client)

    assert response.redirect_chain[-1][0] == "/dashboard/organizations/new"
    user = User.objects.get(email="newcomer@idp.test")
    assert signed_in_user_id(client) == user.pk
    assert EmailAddress.objects.get(user=user, email="newcomer@idp.test").verified
    account = SocialAccount.objects.get(user=user)
    assert (account.provider, account.uid) == (PROVIDER_ID, "new-1")
    assert not user.has_usable_password()  # signed up through the provider: no password to guess

    response = client.post("/dashboard/organizations/new", {"name": "SSO Labs"}, follow=True)
    assert response.status_code == 200
    membership = Membership.objects.get(user=user)
    assert membership.organization.name == "SSO Labs"
    assert "SSO Labs" in client.get("/dashboard/").content.decode()

    # Next time the same subject signs in to the same account, without a second user.
    client.logout()
    sign_in(client)
    assert signed_in_user_id(client) == user.pk
    assert User.objects.filter(email="newcomer@idp.test").count() == 1


def test_sign_in_keeps_the_next_page(db, client, sso):
    sso.sign_in_as(sub="next-1", email="next@idp.test", email_verified=True)
    response = back_to_us(client, visit_provider(start_sign_in(client, next_url="/dashboard/keys/")))
    # A new user has no organisation yet; the dashboard sends them to create one from the keys page too.
    assert response.redirect_chain[0][0] == "/dashboard/keys/"


def test_sign_in_never_sends_the_user_to_another_site(db, client, sso):
    sso.sign_in_as(sub="next-2", email="elsewhere@idp.test", email_verified=True)
    response = back_to_us(client, visit_provider(start_sign_in(client, next_url="https://evil.test/")))
    assert signed_in_user_id(client) is not None
    assert all(url.startswith("/") for url, _ in response.redirect_chain), response.redirect_chain


def test_an_unverified_new_address_is_verified_by_mail_before_any_sign_in(db, client, sso, mailoutbox):
    email = unique_email("unverified")
    sso.sign_in_as(sub="unv-1", email=email, email_verified=False)
    response = sign_in(client)

    assert response.redirect_chain[-1][0] == "/accounts/confirm-email/"
    assert signed_in_user_id(client) is None
    user = User.objects.get(email=email)
    assert not EmailAddress.objects.get(user=user).verified
    assert [m.to for m in mailoutbox] == [[email]]


# --- (b) PKCE ------------------------------------------------------------------------------------------------


def test_the_token_request_carries_the_verifier_of_the_challenge(db, client, sso):
    sign_in(client)

    authorize = sso.authorize_requests[-1]
    assert authorize["code_challenge_method"] == "S256"
    assert authorize["client_id"] == sso.client_id
    assert authorize["redirect_uri"] == f"http://testserver{CALLBACK}"
    assert set(authorize["scope"].split()) >= {"openid", "email"}
    token = sso.token_requests[-1]
    assert token.status == 200
    assert token.code_verifier and s256(token.code_verifier) == authorize["code_challenge"]
    assert token.client_id == sso.client_id and token.auth_method in (
        "client_secret_post",
        "client_secret_basic",
    )
    assert sso.userinfo_requests == 1
    assert signed_in_user_id(client) is not None


def test_a_wrong_verifier_is_refused_and_nobody_signs_in(db, client, sso):
    callback = visit_provider(start_sign_in(client))
    # Swap the verifier allauth stashed for this sign-in: a code stolen from another session arrives
    # with a verifier that is well-formed but not the one behind the challenge.
    session = client.session
    for stashed in session["socialaccount_states"].values():
        stashed[0]["pkce_code_verifier"] = "w" * 64
    session.save()

    response = back_to_us(client, callback)

    assert sso.token_requests[-1].status == 400
    assert sso.token_requests[-1].error == "invalid_grant"
    assert signed_in_user_id(client) is None
    assert not User.objects.filter(email="person@idp.test").exists()
    assert "Third-Party Login Failure" in response.content.decode()


def test_the_fake_refuses_a_mismatched_or_missing_verifier(sso):
    verifier = "v" * 50
    query = {
        "client_id": sso.client_id,
        "redirect_uri": f"http://testserver{CALLBACK}",
        "response_type": "code",
        "scope": "openid email",
        "state": "s1",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }

    def code() -> str:
        location = httpx.get(sso.url("/authorize"), params=query, follow_redirects=False).headers["Location"]
        return parse_qs(urlsplit(location).query)["code"][0]

    def exchange(code: str, **extra: str) -> httpx.Response:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": query["redirect_uri"],
            "client_id": sso.client_id,
            "client_secret": sso.client_secret,
            **extra,
        }
        return httpx.post(sso.url("/token"), data=form)

    assert exchange(code(), code_verifier="x" * 50).json()["error"] == "invalid_grant"
    assert exchange(code()).json()["error"] == "invalid_grant"
    good = code()
    assert exchange(good, code_verifier=verifier).status_code == 200
    assert exchange(good, code_verifier=verifier).json()["error"] == "invalid_grant"  # single use
    assert exchange(code(), code_verifier=verifier, client_secret="nope").status_code == 401
    plain = httpx.get(
        sso.url("/authorize"), params={**query, "code_challenge_method": "plain"}, follow_redirects=False
    )
    assert parse_qs(urlsplit(plain.headers["Location"]).query)["error"] == ["invalid_request"]
    elsewhere = httpx.get(sso.url("/authorize"), params={**query, "redirect_uri": "http://evil.test/cb"})
    assert elsewhere.status_code == 400  # no redirect to an unregistered address


def test_the_id_token_is_signed_with_the_published_key(sso):
    import jwt

    token = sso.id_token({"sub": "abc", "email": "a@idp.test"})
    keys = httpx.get(sso.url("/jwks")).json()["keys"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["kid"] == keys[0]["kid"]
    key = jwt.PyJWK(keys[0]).key
    claims = jwt.decode(token, key, algorithms=["RS256"], audience=sso.client_id, issuer=sso.issuer)
    assert claims["sub"] == "abc"


# --- (c) linking by verified email ----------------------------------------------------------------------------


def local_user(email: str, *, verified: bool = True) -> User:
    user = User.objects.create_user(email=email, password="Local-password-9!")
    EmailAddress.objects.create(user=user, email=email, verified=verified, primary=True)
    return user


def test_a_verified_address_links_the_existing_account(db, client, sso):
    alice = local_user("alice@example.com")
    sso.sign_in_as(sub="alice-at-idp", email="alice@example.com", email_verified=True, name="Alice")

    sign_in(client)

    assert signed_in_user_id(client) == alice.pk
    assert User.objects.filter(email="alice@example.com").count() == 1
    account = SocialAccount.objects.get(provider=PROVIDER_ID, uid="alice-at-idp")
    assert account.user_id == alice.pk
    alice.refresh_from_db()
    assert alice.has_usable_password()  # her own, verified, address: her password stays

    # Linked: the provider signs her in even after the address at the provider changes.
    client.logout()
    sso.sign_in_as(sub="alice-at-idp", email="alice@new-idp.test", email_verified=True)
    sign_in(client)
    assert signed_in_user_id(client) == alice.pk


def test_a_verified_address_at_a_provider_not_trusted_for_linking_does_not_link(
    db, client, no_sso_env, settings, fake_idp
):
    configure_oidc(no_sso_env, settings, fake_idp, link_by_email=False)
    dana = local_user("dana@example.com")
    fake_idp.sign_in_as(sub="dana-at-idp", email="dana@example.com", email_verified=True)

    sign_in(client)

    assert signed_in_user_id(client) is None
    assert not SocialAccount.objects.exists()
    assert User.objects.filter(email="dana@example.com").get() == dana


def test_a_verified_address_takes_over_an_account_nobody_verified(db, client, sso, mailoutbox):
    # Someone registered erin@ but never confirmed it (so never signed in). The password they chose
    # stops working; the address's owner, whom the provider vouches for, confirms it by mail once.
    email = unique_email("erin")
    erin = local_user(email, verified=False)
    sso.sign_in_as(sub="erin-at-idp", email=email, email_verified=True)

    response = sign_in(client)

    erin.refresh_from_db()
    assert not erin.has_usable_password()
    assert SocialAccount.objects.get(uid="erin-at-idp").user_id == erin.pk
    assert signed_in_user_id(client) is None
    assert response.redirect_chain[-1][0] == "/accounts/confirm-email/"
    assert [m.to for m in mailoutbox] == [[email]]


@pytest.mark.parametrize("claim", [False, "false", None])
def test_an_unverified_address_never_reaches_the_existing_account(db, client, sso, claim):
    bob = local_user("bob@example.com")
    claims = {"sub": "mallory", "email": "bob@example.com", "name": "Not Bob"}
    if claim is not None:
        claims["email_verified"] = claim
    sso.sign_in_as(**claims)

    sign_in(client)

    assert signed_in_user_id(client) is None
    assert not SocialAccount.objects.filter(user=bob).exists()
    assert User.objects.filter(email__iexact="bob@example.com").count() == 1
    bob.refresh_from_db()
    assert bob.has_usable_password()
    # Nor does a later, verified, sign-in of the same subject inherit anything from the attempt.
    assert not SocialAccount.objects.filter(uid="mallory").exists()


# --- (e) nothing configured ----------------------------------------------------------------------------------


SOCIAL_URLS = [
    f"/accounts/oidc/{PROVIDER_ID}/login/",
    f"/accounts/oidc/{PROVIDER_ID}/login/callback/?code=x&state=y",
    "/accounts/google/login/",
    "/accounts/google/login/callback/?code=x&state=y",
    "/accounts/google/login/token/",
    "/accounts/github/login/",
    "/accounts/github/login/callback/?code=x&state=y",
    "/accounts/3rdparty/",
    "/accounts/3rdparty/signup/",
    "/accounts/3rdparty/login/cancelled/",
    "/accounts/3rdparty/login/error/",
]


def test_nothing_configured_means_no_buttons_and_no_sso_urls(db, no_sso_env, settings):
    settings.SOCIALACCOUNT_PROVIDERS = social_providers()
    client = Client()
    for page in ("/accounts/login/", "/accounts/signup/"):
        body = client.get(page).content.decode()
        assert "Continue with" not in body and "sso-buttons" not in body
    for url in SOCIAL_URLS:
        for method in (client.get, client.post):
            assert method(url).status_code == 404, url
    client.force_login(local_user("carol@example.com"))
    assert client.get("/accounts/3rdparty/").status_code == 404


def test_a_provider_that_is_not_configured_answers_404_while_another_is(db, client, sso):
    for url in ("/accounts/google/login/", "/accounts/github/login/callback/?code=x&state=y"):
        assert client.post(url).status_code == 404, url
    assert client.post("/accounts/oidc/other/login/").status_code == 404
    assert client.post(f"/accounts/oidc/{PROVIDER_ID}/login/").status_code == 302


def test_buttons_show_the_configured_provider_on_both_pages(db, client, sso):
    for page in ("/accounts/login/", "/accounts/signup/"):
        body = client.get(page).content.decode()
        assert "Continue with Fake IdP" in body
        assert f'action="/accounts/oidc/{PROVIDER_ID}/login/?process=login"' in body
        assert "<svg" in body


# --- the admin instead of the environment ------------------------------------------------------------------


def test_a_provider_added_in_the_admin_works_like_one_from_settings(
    db, client, no_sso_env, settings, fake_idp
):
    settings.SOCIALACCOUNT_PROVIDERS = social_providers()
    admin = UserFactory(email="root@example.com", is_staff=True, is_superuser=True)
    staff = Client()
    staff.force_login(admin)
    assert staff.get("/admin/socialaccount/socialapp/add/").status_code == 200
    SocialApp.objects.create(
        provider="openid_connect",
        provider_id="corp",
        name="Corp SSO",
        client_id=fake_idp.client_id,
        secret=fake_idp.client_secret,
        settings={"server_url": fake_idp.issuer},
    )
    fake_idp.allow_redirect_uri("http://testserver/accounts/oidc/corp/login/callback/")
    fake_idp.sign_in_as(sub="corp-1", email="worker@corp.test", email_verified=True)

    assert "Continue with Corp SSO" in client.get("/accounts/login/").content.decode()
    sign_in(client, provider_id="corp")

    assert signed_in_user_id(client) == User.objects.get(email="worker@corp.test").pk
    assert fake_idp.authorize_requests[-1]["code_challenge_method"] == "S256"  # PKCE for admin apps too


# --- (f) Google and GitHub: configuration only -------------------------------------------------------------


def test_google_and_github_are_wired_from_the_environment(db, client, no_sso_env, settings):
    no_sso_env.setenv("SWITCHYARD_GOOGLE_CLIENT_ID", "google-client.apps.googleusercontent.com")
    no_sso_env.setenv("SWITCHYARD_GOOGLE_CLIENT_SECRET", "google-secret")
    no_sso_env.setenv("SWITCHYARD_GITHUB_CLIENT_ID", "Iv1.github-client")
    no_sso_env.setenv("SWITCHYARD_GITHUB_CLIENT_SECRET", "github-secret")
    settings.SOCIALACCOUNT_PROVIDERS = social_providers()

    body = client.get("/accounts/login/").content.decode()
    assert "Continue with Google" in body and "Continue with GitHub" in body
    assert "Continue with Fake IdP" not in body

    google = urlsplit(client.post("/accounts/google/login/")["Location"])
    assert (google.scheme, google.netloc, google.path) == (
        "https",
        "accounts.google.com",
        "/o/oauth2/v2/auth",
    )
    q = parse_qs(google.query)
    assert q["client_id"] == ["google-client.apps.googleusercontent.com"]
    assert q["redirect_uri"] == ["http://testserver/accounts/google/login/callback/"]
    assert q["code_challenge_method"] == ["S256"] and q["code_challenge"][0]
    assert set(q["scope"][0].split()) == {"profile", "email"}

    github = urlsplit(client.post("/accounts/github/login/")["Location"])
    assert (github.netloc, github.path) == ("github.com", "/login/oauth/authorize")
    q = parse_qs(github.query)
    assert q["client_id"] == ["Iv1.github-client"]
    assert q["redirect_uri"] == ["http://testserver/accounts/github/login/callback/"]
    assert "user:email" in q["scope"][0].split()  # GitHub's verified flag comes from /user/emails

    # The OIDC URLs stay closed: only what is configured answers.
    assert client.post(f"/accounts/oidc/{PROVIDER_ID}/login/").status_code == 404


# --- the operator's variables --------------------------------------------------------------------------------


def oidc_env(**entry: object) -> str:
    base: dict[str, object] = {
        "id": "corp",
        "name": "Corp",
        "server_url": "https://idp.corp.test",
        "client_id": "c",
        "secret": "s",
    }
    base.update(entry)
    return json.dumps([{k: v for k, v in base.items() if v is not None}])


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SWITCHYARD_GOOGLE_CLIENT_ID": "x"}, "SWITCHYARD_GOOGLE_CLIENT_SECRET is required"),
        ({"SWITCHYARD_GITHUB_CLIENT_SECRET": "x"}, "SWITCHYARD_GITHUB_CLIENT_ID is required"),
        ({"SWITCHYARD_OIDC_PROVIDERS": "[{"}, "SWITCHYARD_OIDC_PROVIDERS must be valid JSON"),
        ({"SWITCHYARD_OIDC_PROVIDERS": '{"id": "corp"}'}, "SWITCHYARD_OIDC_PROVIDERS must be a JSON list"),
        ({"SWITCHYARD_OIDC_PROVIDERS": '["corp"]'}, "SWITCHYARD_OIDC_PROVIDERS[0] must be an object"),
        ({"SWITCHYARD_OIDC_PROVIDERS": oidc_env(secret=None)}, "SWITCHYARD_OIDC_PROVIDERS[0] needs 'secret'"),
        ({"SWITCHYARD_OIDC_PROVIDERS": oidc_env(client_id="")}, "needs 'client_id'"),
        ({"SWITCHYARD_OIDC_PROVIDERS": oidc_env(id="Corp SSO")}, "id 'Corp SSO' must be"),
        ({"SWITCHYARD_OIDC_PROVIDERS": oidc_env(id="google")}, "id 'google' must be"),
        ({"SWITCHYARD_OIDC_PROVIDERS": oidc_env(server_url="http://idp.corp.test")}, "server_url"),
        ({"SWITCHYARD_OIDC_PROVIDERS": oidc_env(server_url="idp.corp.test")}, "server_url"),
        ({"SWITCHYARD_OIDC_PROVIDERS": oidc_env(token_auth_method="jwt")}, "token_auth_method"),
        ({"SWITCHYARD_OIDC_PROVIDERS": oidc_env(pkce="yes")}, "pkce must be true or false"),
        ({"SWITCHYARD_OIDC_PROVIDERS": oidc_env(link_by_email=1)}, "link_by_email must be true or false"),
        ({"SWITCHYARD_OIDC_PROVIDERS": oidc_env(scope="openid")}, "unknown key(s) scope"),
        (
            {"SWITCHYARD_OIDC_PROVIDERS": json.dumps([json.loads(oidc_env())[0]] * 2)},
            "SWITCHYARD_OIDC_PROVIDERS[1]: the id 'corp' is used twice",
        ),
    ],
)
def test_a_malformed_variable_is_named(no_sso_env, env, message):
    for name, value in env.items():
        no_sso_env.setenv(name, value)
    with pytest.raises(ImproperlyConfigured) as excinfo:
        social_providers()
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_an_oidc_provider_on_this_machine_may_use_http(no_sso_env):
    no_sso_env.setenv("SWITCHYARD_OIDC_PROVIDERS", oidc_env(server_url="http://127.0.0.1:5556/dex/"))
    (app,) = social_providers()["openid_connect"]["APPS"]
    assert app["provider_id"] == "corp"
    assert app["settings"] == {"server_url": "http://127.0.0.1:5556/dex", "oauth_pkce_enabled": True}


def settings_process(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SSO_ENV}
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "switchyard.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_settings_module_reads_the_variables_and_refuses_a_bad_one():
    show = (
        "from django.conf import settings; "
        "print(sorted((p, app.get('provider_id', '')) for p, c in settings.SOCIALACCOUNT_PROVIDERS.items() "
        "for app in c.get('APPS', [])))"
    )
    good = settings_process(
        {
            "SWITCHYARD_GOOGLE_CLIENT_ID": "g",
            "SWITCHYARD_GOOGLE_CLIENT_SECRET": "gs",
            "SWITCHYARD_OIDC_PROVIDERS": oidc_env(),
        },
        show,
    )
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == "[('google', ''), ('openid_connect', 'corp')]"

    bad = settings_process({"SWITCHYARD_GITHUB_CLIENT_ID": "only-the-id"}, "pass")
    assert bad.returncode != 0
    last = bad.stderr.strip().splitlines()[-1]
    assert last == (
        "django.core.exceptions.ImproperlyConfigured: "
        "SWITCHYARD_GITHUB_CLIENT_SECRET is required when SWITCHYARD_GITHUB_CLIENT_ID is set."
    )


# --- the happy path in a real browser --------------------------------------------------------------------


@pytest.fixture
def chromium():
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_in_a_browser_a_new_user_continues_with_oidc_to_the_dashboard(live, no_sso_env, settings, chromium):
    with FakeOIDC() as idp:
        idp.allow_redirect_uri(f"{live.url}{CALLBACK}")
        configure_oidc(no_sso_env, settings, idp)
        idp.sign_in_as(sub="browser-1", email="bea@idp.test", email_verified=True, name="Bea Browser")
        page = chromium.new_context(viewport={"width": 1280, "height": 800}).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        page.goto(f"{live.url}/accounts/login/")
        button = page.get_by_role("button", name="Continue with Fake IdP")
        assert button.locator("svg").count() == 1
        Shooter()(page, "login-sso")
        button.click()
        page.wait_for_url("**/dashboard/organizations/new")
        page.get_by_label("Organisation name").fill("Single Sign-On Labs")
        page.get_by_role("button", name="Create organisation").click()
        page.wait_for_url("**/dashboard/keys/")
        page.goto(f"{live.url}/dashboard/")
        assert "Single Sign-On Labs" in page.content()
        page.goto(f"{live.url}/accounts/3rdparty/")  # the signed-in user's connected providers
        assert "Fake IdP" in page.content()
        Shooter()(page, "sso-connections")

        assert idp.authorize_requests[-1]["redirect_uri"] == f"{live.url}{CALLBACK}"
        assert idp.token_requests[-1].status == 200
        membership = orm(
            lambda: Membership.objects.select_related("user").get(organization__name="Single Sign-On Labs")
        )
        assert membership.user.email == "bea@idp.test"
        assert orm(lambda: SocialAccount.objects.get(uid="browser-1").user_id) == membership.user_id
        assert errors == []
