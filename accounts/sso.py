"""Single sign-on switches: SSO answers only for providers the operator configured (docs/sso.md).

allauth's social accounts are always installed so an operator can add a provider in the Django admin,
but with nothing configured its URLs must not answer: `SsoGateMiddleware` turns every social-account
view into a 404 then, and a built-in provider's login/callback URLs into a 404 while that provider
has no app (allauth itself would raise SocialApp.DoesNotExist there, a 500).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from allauth.socialaccount.adapter import get_adapter
from django.http import Http404, HttpRequest, HttpResponse

SOCIALACCOUNT_MODULE = "allauth.socialaccount"


def configured_provider_ids(request: HttpRequest) -> set[str]:
    """The provider types (google, github, openid_connect) that have an app in settings or the admin."""
    return {app.provider for app in get_adapter(request).list_apps(request)}


class SsoGateMiddleware:
    """404 for social-account URLs while no provider (or not this provider) is configured."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], args: Any, kwargs: Any
    ) -> None:
        if not getattr(view_func, "__module__", "").startswith(SOCIALACCOUNT_MODULE):
            return
        configured = configured_provider_ids(request)
        if not configured:
            raise Http404("Single sign-on is not configured.")
        url_name = request.resolver_match.url_name if request.resolver_match else None
        for provider in ("google", "github"):
            if url_name and url_name.startswith(f"{provider}_") and provider not in configured:
                raise Http404(f"{provider} sign-in is not configured.")
