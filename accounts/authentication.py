"""DRF authentication with `Authorization: Bearer sk-sy-v1-...` keys."""

from __future__ import annotations

from typing import Any, cast

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from accounts.keys import KeyInfo, key_lookup_sync


class KeyPrincipal:
    """The authenticated caller: an API key acting for its organisation."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, info: KeyInfo) -> None:
        self.key = info
        self.org_id = info.org_id


def authenticate_bearer(header: str | None) -> KeyInfo:
    if not header:
        raise exceptions.NotAuthenticated("Missing API key: send `Authorization: Bearer sk-sy-v1-...`.")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise exceptions.AuthenticationFailed("Malformed Authorization header: expected `Bearer <api key>`.")
    info = key_lookup_sync(secret.strip())
    if info is None:
        raise exceptions.AuthenticationFailed("Invalid API key.")
    if not info.active():
        raise exceptions.AuthenticationFailed("This API key is disabled, deleted or expired.")
    return info


def principal(request: Request) -> KeyPrincipal:
    """The key behind an authenticated API request (views require IsAuthenticated)."""
    return cast(KeyPrincipal, request.user)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = request.META.get("HTTP_AUTHORIZATION")
        if not header:
            return None  # the view's permission decides whether anonymous callers are fine
        info = authenticate_bearer(header)
        return KeyPrincipal(info), info

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
