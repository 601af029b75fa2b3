"""Dashboard plumbing shared by every app's pages: the signed-in request, the current organisation, rendering.

`dashboard_view` (login, current organisation from the session, role check) and `render_dashboard` (the
sidebar's context) live here, below billing and routing, so their views import them without reaching
into accounts' own pages. Objects are always looked up inside the current organisation, so another
organisation's ids answer 404.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, cast

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render

from accounts import selectors
from accounts.models import MANAGER_ROLES, Membership, Organization, User

ORG_SESSION_KEY = "sy_org"


class DashboardRequest(HttpRequest):
    """What `dashboard_view` hands a view: a signed-in user and their current membership."""

    user: User  # type: ignore[assignment]
    membership: Membership
    org: Organization


def current_membership(request: HttpRequest) -> Membership | None:
    user = cast(User, request.user)
    membership = selectors.membership_get(user=user, organization_id=request.session.get(ORG_SESSION_KEY))
    if membership is not None and request.session.get(ORG_SESSION_KEY) != membership.organization_id:
        request.session[ORG_SESSION_KEY] = membership.organization_id
    return membership


def dashboard_view(
    *, manage: bool = False
) -> Callable[[Callable[..., HttpResponseBase]], Callable[..., HttpResponseBase]]:
    """Signed-in users with an organisation; `manage=True` also requires the owner or admin role (else 403)."""

    def decorator(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        @login_required
        @wraps(view)
        def wrapper(request: DashboardRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            membership = current_membership(request)
            if membership is None:
                return redirect("org-create")
            if manage and membership.role not in MANAGER_ROLES:
                raise PermissionDenied("Only owners and admins can do this.")
            request.membership = membership
            request.org = membership.organization
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def render_dashboard(
    request: HttpRequest, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> HttpResponse:
    membership: Membership | None = getattr(request, "membership", None)
    base = {
        "membership": membership,
        "org": membership.organization if membership else None,
        "can_manage": bool(membership and membership.role in MANAGER_ROLES),
        "orgs": selectors.organization_list_for_user(user=request.user)
        if request.user.is_authenticated
        else [],
    }
    return render(request, template, {**base, **(context or {})}, status=status)


def base_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/").rstrip("/")
