"""Single sign-on providers (allauth social accounts) read from environment variables (docs/sso.md).

`social_providers()` returns the value of `SOCIALACCOUNT_PROVIDERS`: provider-wide defaults that also
apply to apps an operator adds in the Django admin, plus one settings-backed app per provider the
environment configures. Nothing set means no app, so no button and no provider URL answers.
"""

from __future__ import annotations

import copy
import re
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from switchyard.env import env_json, env_str

OIDC_VARIABLE = "SWITCHYARD_OIDC_PROVIDERS"
OIDC_REQUIRED = ("id", "name", "server_url", "client_id", "secret")
OIDC_OPTIONAL = ("token_auth_method", "pkce", "link_by_email")
TOKEN_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
# The id is part of the callback URL (/accounts/oidc/<id>/login/callback/) and the SocialAccount's
# provider column; "google" and "github" would shadow the built-in providers' apps in lookups.
_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
_RESERVED_IDS = {"google", "github", "openid_connect"}
# Plain http is only for an issuer on this machine (development, the test suite's fake provider).
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}

# Provider-wide defaults (the uppercase keys allauth reads for every app of the provider, including
# apps added in the admin). PKCE wherever the provider supports it; GitHub's OAuth apps do not need
# it and allauth leaves it off there.
GOOGLE_DEFAULTS: dict[str, Any] = {
    "SCOPE": ["profile", "email"],
    "AUTH_PARAMS": {"access_type": "online"},
    "OAUTH_PKCE_ENABLED": True,
}
GITHUB_DEFAULTS: dict[str, Any] = {"SCOPE": ["read:user", "user:email"]}
OIDC_DEFAULTS: dict[str, Any] = {"OAUTH_PKCE_ENABLED": True}


def social_providers() -> dict[str, dict[str, Any]]:
    """`SOCIALACCOUNT_PROVIDERS` from the environment; ImproperlyConfigured names a malformed variable."""
    providers: dict[str, dict[str, Any]] = {
        "google": copy.deepcopy(GOOGLE_DEFAULTS),
        "github": copy.deepcopy(GITHUB_DEFAULTS),
        "openid_connect": copy.deepcopy(OIDC_DEFAULTS),
    }
    for provider, prefix in (("google", "SWITCHYARD_GOOGLE"), ("github", "SWITCHYARD_GITHUB")):
        app = _client_app(prefix)
        if app is not None:
            providers[provider]["APPS"] = [app]
    oidc_apps = _oidc_apps()
    if oidc_apps:
        providers["openid_connect"]["APPS"] = oidc_apps
    return providers


def _client_app(prefix: str) -> dict[str, Any] | None:
    id_name, secret_name = f"{prefix}_CLIENT_ID", f"{prefix}_CLIENT_SECRET"
    client_id = env_str(id_name, "").strip()
    secret = env_str(secret_name, "").strip()
    if not client_id and not secret:
        return None
    if not client_id:
        raise ImproperlyConfigured(f"{id_name} is required when {secret_name} is set.")
    if not secret:
        raise ImproperlyConfigured(f"{secret_name} is required when {id_name} is set.")
    return {"client_id": client_id, "secret": secret, "key": ""}


def _oidc_apps() -> list[dict[str, Any]]:
    raw = env_json(OIDC_VARIABLE, [])
    if not isinstance(raw, list):
        raise ImproperlyConfigured(f"{OIDC_VARIABLE} must be a JSON list of provider objects.")
    apps: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"{OIDC_VARIABLE}[{index}]"
        app = _oidc_app(entry, where)
        if app["provider_id"] in seen:
            raise ImproperlyConfigured(f"{where}: the id {app['provider_id']!r} is used twice.")
        seen.add(app["provider_id"])
        apps.append(app)
    return apps


def _oidc_app(entry: object, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ImproperlyConfigured(f"{where} must be an object with {', '.join(OIDC_REQUIRED)}.")
    unknown = sorted(set(entry) - set(OIDC_REQUIRED) - set(OIDC_OPTIONAL))
    if unknown:
        raise ImproperlyConfigured(f"{where} has unknown key(s) {', '.join(unknown)}.")
    for key in OIDC_REQUIRED:
        value = entry.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ImproperlyConfigured(f"{where} needs {key!r} (a non-empty string).")
    provider_id = entry["id"].strip()
    if not _ID_RE.match(provider_id) or provider_id in _RESERVED_IDS:
        raise ImproperlyConfigured(
            f"{where}: id {provider_id!r} must be 1-40 lowercase letters, digits or dashes "
            "and not google, github or openid_connect."
        )
    server_url = entry["server_url"].strip().rstrip("/")
    parts = urlsplit(server_url)
    secure = parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS)
    if not parts.hostname or not secure:
        raise ImproperlyConfigured(
            f"{where}: server_url {server_url!r} must be the issuer's https:// URL "
            "(http:// only for 127.0.0.1 or localhost)."
        )
    settings: dict[str, Any] = {"server_url": server_url}
    method = entry.get("token_auth_method")
    if method is not None:
        if method not in TOKEN_AUTH_METHODS:
            raise ImproperlyConfigured(
                f"{where}: token_auth_method must be one of {', '.join(TOKEN_AUTH_METHODS)}."
            )
        settings["token_auth_method"] = method
    pkce = entry.get("pkce", True)
    if not isinstance(pkce, bool):
        raise ImproperlyConfigured(f"{where}: pkce must be true or false.")
    settings["oauth_pkce_enabled"] = pkce
    # An issuer whose email_verified cannot be trusted (it lets users type any address) is set to
    # false: its sign-ins then never reach an existing account by address, verified or not.
    link_by_email = entry.get("link_by_email", True)
    if not isinstance(link_by_email, bool):
        raise ImproperlyConfigured(f"{where}: link_by_email must be true or false.")
    if not link_by_email:
        settings["email_authentication"] = False
    return {
        "provider_id": provider_id,
        "name": entry["name"].strip(),
        "client_id": entry["client_id"].strip(),
        "secret": entry["secret"],
        "key": "",
        "settings": settings,
    }
