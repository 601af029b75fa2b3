"""Dashboard pages for organisations, members, invitations, API keys, settings and the overview.

The plumbing they share with the other apps' pages (`dashboard_view`, `render_dashboard`) is in
accounts/dashboard.py. Objects are always looked up inside the current organisation, so another
organisation's ids answer 404.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts import selectors, services
from accounts.dashboard import (
    ORG_SESSION_KEY,
    DashboardRequest,
    base_url,
    current_membership,
    dashboard_view,
    render_dashboard,
)
from accounts.models import (
    MANAGER_ROLES,
    PLAYGROUND_KEY_NAME,
    LimitReset,
    Membership,
    Role,
)
from switchyard.errors import SwitchyardError
from switchyard.money import from_units

NEW_KEY_SESSION_KEY = "sy_new_key"


def _error(form: forms.Form, exc: SwitchyardError, field: str | None = None) -> None:
    form.add_error(field, exc.message)


# --- overview -------------------------------------------------------------------------------------


@dashboard_view()
def dashboard_home(request: DashboardRequest) -> HttpResponse:
    from billing.selectors import balance_get, spend_since
    from routing.selectors import generation_list, usage_by_day, usage_chart_data

    org = request.org
    week_ago = timezone.now() - timedelta(days=7)
    recent = generation_list(organization_id=org.pk)
    keys = selectors.api_key_dashboard_list(
        organization=org,
        created_by=None if request.membership.role in MANAGER_ROLES else request.user,
    )
    has_requests = recent.exists()
    context: dict[str, Any] = {
        "section": "overview",
        "balance": balance_get(organization=org),
        "spend_week": spend_since(organization_id=org.pk, since=week_ago),
        "requests_week": recent.filter(created_at__gte=week_ago).count(),
        "recent": list(recent[:8]),
        "key_count": len(keys),
        "has_requests": has_requests,
        "base_url": base_url(request),
    }
    if has_requests:
        week = usage_by_day(organization_id=org.pk, days=7, group_by=None)
        context["week_chart"] = usage_chart_data(week)
        context["week_totals"] = week["totals"]
    return render_dashboard(request, "dashboard/home.html", context)


# --- organisations --------------------------------------------------------------------------------


class OrganizationForm(forms.Form):
    name = forms.CharField(
        max_length=200,
        label="Organisation name",
        help_text="Your team or project, e.g. “Acme Research”. You can rename it later.",
        widget=forms.TextInput(attrs={"autocomplete": "organization", "autofocus": True}),
    )


@login_required
def org_create(request: DashboardRequest) -> HttpResponse:
    form = OrganizationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            org = services.organization_create_for_user(name=form.cleaned_data["name"], owner=request.user)
        except SwitchyardError as exc:
            _error(form, exc, "name")
        else:
            request.session[ORG_SESSION_KEY] = org.pk
            messages.success(request, f"Created {org.name}. Next: create an API key.")
            return redirect("keys")
    request.membership = current_membership(request)  # type: ignore[assignment]
    return render_dashboard(request, "dashboard/org_create.html", {"form": form, "section": "org-new"})


@login_required
@require_POST
def org_switch(request: DashboardRequest) -> HttpResponse:
    try:
        org_id = int(request.POST.get("organization", "")[:20])
    except ValueError:
        raise Http404
    if not 0 < org_id < 2**63:  # bigger ids cannot reach the database (an OverflowError, a 500)
        raise Http404
    membership = selectors.membership_get(user=request.user, organization_id=org_id)
    if membership is None or membership.organization_id != org_id:
        raise Http404
    request.session[ORG_SESSION_KEY] = org_id
    messages.info(request, f"Switched to {membership.organization.name}.")
    return redirect(request.POST.get("next") or "dashboard") if _safe_next(request) else redirect("dashboard")


def _safe_next(request: HttpRequest) -> bool:
    from django.utils.http import url_has_allowed_host_and_scheme

    nxt = request.POST.get("next", "")
    return not nxt or url_has_allowed_host_and_scheme(nxt, allowed_hosts={request.get_host()})


# --- members and invitations ----------------------------------------------------------------------


class InviteForm(forms.Form):
    email = forms.EmailField(label="Email address", widget=forms.EmailInput(attrs={"autocomplete": "off"}))
    role = forms.ChoiceField(
        choices=Role.choices,
        initial=Role.MEMBER,
        help_text="Members can use the playground, see activity and manage their own keys. "
        "Admins also manage every key, members and billing.",
    )

    def __init__(self, *args: Any, actor_role: str = Role.OWNER, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if actor_role != Role.OWNER:
            cast(forms.ChoiceField, self.fields["role"]).choices = [
                c for c in Role.choices if c[0] != Role.OWNER
            ]


@dashboard_view()
def members(request: DashboardRequest) -> HttpResponse:
    membership: Membership = request.membership
    form = InviteForm(request.POST or None, actor_role=membership.role)
    if request.method == "POST":
        if membership.role not in MANAGER_ROLES:
            raise PermissionDenied
        if form.is_valid():
            accept = request.build_absolute_uri(reverse("invite-accept", args=["TOKEN"])).replace(
                "TOKEN", "{token}"
            )
            try:
                invitation, _ = services.invitation_create(
                    actor=membership,
                    email=form.cleaned_data["email"],
                    role=form.cleaned_data["role"],
                    accept_url=accept,
                )
            except SwitchyardError as exc:
                _error(form, exc, "email")
            else:
                messages.success(request, f"Invitation sent to {invitation.email}.")
                return redirect("members")
    context = {
        "section": "members",
        "members": selectors.membership_list(organization=membership.organization),
        "invitations": selectors.invitation_list_pending(organization=membership.organization),
        "form": form,
        "roles": Role.choices
        if membership.role == Role.OWNER
        else [c for c in Role.choices if c[0] != Role.OWNER],
    }
    return render_dashboard(request, "dashboard/members.html", context, status=400 if form.errors else 200)


def _member_in_org(request: DashboardRequest, member_id: int) -> Membership:
    target = (
        Membership.objects.filter(pk=member_id, organization=request.org)
        .select_related("user", "organization")
        .first()
    )
    if target is None:
        raise Http404
    return target


@dashboard_view(manage=True)
@require_POST
def member_role(request: DashboardRequest, member_id: int) -> HttpResponse:
    target = _member_in_org(request, member_id)
    try:
        services.membership_role_change(
            actor=request.membership, target=target, role=request.POST.get("role", "")
        )
    except SwitchyardError as exc:
        if exc.status == 403:
            raise PermissionDenied(exc.message)
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{target.user.email} is now {target.get_role_display().lower()}.")
    return redirect("members")


@dashboard_view(manage=True)
@require_POST
def member_remove(request: DashboardRequest, member_id: int) -> HttpResponse:
    target = _member_in_org(request, member_id)
    try:
        services.membership_remove(actor=request.membership, target=target)
    except SwitchyardError as exc:
        if exc.status == 403:
            raise PermissionDenied(exc.message)
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Removed {target.user.email}.")
    return redirect("members")


@dashboard_view()
@require_POST
def member_leave(request: DashboardRequest) -> HttpResponse:
    """Leave the current organisation; the member's keys (playground key included) are revoked."""
    org = request.org
    try:
        services.membership_leave(membership=request.membership)
    except SwitchyardError as exc:
        messages.error(request, exc.message)
        return redirect("members")
    request.session.pop(ORG_SESSION_KEY, None)
    messages.success(request, f"You left {org.name}; your keys in it no longer work.")
    return redirect("dashboard")


@dashboard_view(manage=True)
@require_POST
def invitation_revoke(request: DashboardRequest, invitation_id: int) -> HttpResponse:
    invitation = selectors.invitation_list_pending(organization=request.org).filter(pk=invitation_id).first()
    if invitation is None:
        raise Http404
    try:
        services.invitation_revoke(actor=request.membership, invitation=invitation)
    except SwitchyardError as exc:
        raise PermissionDenied(exc.message)
    messages.success(request, f"Revoked the invitation to {invitation.email}.")
    return redirect("members")


@login_required
def invitation_accept(request: DashboardRequest, token: str) -> HttpResponse:
    invitation = services.invitation_by_token(token=token)
    if invitation is None:
        raise Http404
    error = None
    if request.method == "POST":
        try:
            membership = services.invitation_accept(token=token, user=request.user)
        except SwitchyardError as exc:
            error = exc.message
        else:
            request.session[ORG_SESSION_KEY] = membership.organization_id
            messages.success(request, f"Welcome to {membership.organization.name}.")
            return redirect("dashboard")
    elif not invitation.is_pending:
        error = "This invitation is no longer valid: it was used, revoked or has expired."
    elif invitation.email.lower() != request.user.email.lower():
        error = (
            f"This invitation was sent to {invitation.email}; you are signed in as {request.user.email}. "
            "Sign in with the invited address to accept it."
        )
    request.membership = current_membership(request)  # type: ignore[assignment]
    return render_dashboard(
        request,
        "dashboard/invitation_accept.html",
        {"invitation": invitation, "error": error},
        status=400 if error and request.method == "POST" else 200,
    )


# --- API keys -------------------------------------------------------------------------------------


class KeyForm(forms.Form):
    name = forms.CharField(
        max_length=120,
        help_text="Something that tells you where it is used, e.g. “staging backend”.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    limit = forms.DecimalField(
        label="Credit limit (USD)",
        required=False,
        min_value=Decimal(0),
        max_digits=18,
        decimal_places=6,
        help_text="Leave empty for no limit. Requests that would go over it get a 402.",
        widget=forms.NumberInput(attrs={"step": "0.01", "inputmode": "decimal", "placeholder": "No limit"}),
    )
    limit_reset = forms.ChoiceField(
        label="Limit resets",
        choices=LimitReset.choices,
        initial=LimitReset.NONE,
        help_text="Daily, weekly (Mondays) and monthly windows start at 00:00 UTC.",
    )
    expires = forms.DateField(
        label="Expires on",
        required=False,
        help_text="Optional. The key stops working at the start of that day (UTC).",
        widget=forms.DateInput(attrs={"type": "date"}),
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if name.lower() == PLAYGROUND_KEY_NAME.lower():
            raise forms.ValidationError(f"“{PLAYGROUND_KEY_NAME}” is reserved for the playground's own key.")
        return name

    def clean_expires(self) -> datetime | None:
        day = self.cleaned_data.get("expires")
        if day is None:
            return None
        moment = datetime.combine(day, time.min, tzinfo=UTC)
        if moment <= timezone.now() and (not self.initial or self.initial.get("expires") != day):
            raise forms.ValidationError("Pick a date in the future.")
        return moment


@dashboard_view()
def keys(request: DashboardRequest) -> HttpResponse:
    membership: Membership = request.membership
    rows = selectors.api_key_dashboard_list(
        organization=membership.organization,
        created_by=None if membership.role in MANAGER_ROLES else membership.user,
    )
    return render_dashboard(request, "dashboard/keys.html", {"section": "keys", "rows": rows})


@dashboard_view()
def key_new(request: DashboardRequest) -> HttpResponse:
    membership: Membership = request.membership
    form = KeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            key, secret = services.api_key_create(
                organization=membership.organization,
                name=data["name"],
                created_by=membership.user,
                limit_usd=data["limit"],
                limit_reset=data["limit_reset"],
                expires_at=data["expires"],
            )
        except SwitchyardError as exc:
            _error(form, exc, "limit")
        else:
            # Post/redirect/get: the secret waits in the (server-side) session for the one GET that
            # shows it, so reloading or going back and forth never re-sends the form or re-shows it.
            request.session[NEW_KEY_SESSION_KEY] = {"id": key.pk, "secret": secret}
            return redirect("key-created")
    return render_dashboard(
        request,
        "dashboard/key_form.html",
        {"section": "keys", "form": form, "creating": True},
        status=400 if form.errors else 200,
    )


@dashboard_view()
def key_created(request: DashboardRequest) -> HttpResponse:
    """The new key's secret, once: popped from the session by the first display."""
    entry = request.session.pop(NEW_KEY_SESSION_KEY, None)
    key = _key_or_404(request, entry["id"]) if entry else None
    response = render_dashboard(
        request,
        "dashboard/key_created.html",
        {
            "section": "keys",
            "key": key,
            "secret": entry["secret"] if entry else None,
            "base_url": base_url(request),
        },
    )
    response["Cache-Control"] = "no-store"
    return response


def _key_or_404(request: DashboardRequest, key_id: int, *, include_playground: bool = False) -> Any:
    key = selectors.api_key_get_for_member(
        membership=request.membership, key_id=key_id, include_playground=include_playground
    )
    if key is None:
        raise Http404
    return key


@dashboard_view()
def key_edit(request: DashboardRequest, key_id: int) -> HttpResponse:
    key = _key_or_404(request, key_id)
    initial = {
        "name": key.name,
        "limit": from_units(key.limit_units).normalize() if key.limit_units is not None else None,
        "limit_reset": key.limit_reset,
        "expires": key.expires_at.date() if key.expires_at else None,
    }
    form = KeyForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.api_key_update(
                key=key,
                name=data["name"],
                limit_usd=data["limit"],
                clear_limit=data["limit"] is None,
                limit_reset=data["limit_reset"],
                expires_at=data["expires"],
            )
            if data["expires"] is None and key.expires_at is not None:
                services.api_key_expiry_clear(key=key)
        except SwitchyardError as exc:
            _error(form, exc, "limit")
        else:
            messages.success(request, f"Saved “{key.name}”.")
            return redirect("keys")
    return render_dashboard(
        request,
        "dashboard/key_form.html",
        {"section": "keys", "form": form, "key": key},
        status=400 if form.errors else 200,
    )


@dashboard_view()
@require_POST
def key_action(request: DashboardRequest, key_id: int, action: str) -> HttpResponse:
    key = _key_or_404(request, key_id, include_playground=True)
    if action == "disable":
        services.api_key_set_disabled(key=key, disabled=True)
        messages.success(request, f"Disabled “{key.name}”. Requests with it now get a 401.")
    elif action == "enable":
        services.api_key_set_disabled(key=key, disabled=False)
        messages.success(request, f"Re-enabled “{key.name}”.")
    elif action == "delete":
        # Audited even for a playground key: here someone revokes it, the playground does not replace it.
        services.api_key_delete(key=key, actor=request.user, audit_always=True)
        messages.success(request, f"Deleted “{key.name}”. Its past activity stays in the activity log.")
    else:
        raise Http404
    return redirect("keys")


# --- settings and profile -------------------------------------------------------------------------


class OrgSettingsForm(forms.Form):
    name = forms.CharField(max_length=200, label="Organisation name")
    ignore = forms.MultipleChoiceField(
        label="Never route to these providers",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Applies to every request of every key; requests can add more with provider.ignore.",
    )
    data_collection = forms.ChoiceField(
        label="Provider data policy",
        choices=[
            ("allow", "Allow providers that may train on or retain prompts"),
            ("deny", "Deny: only use providers that do not train on prompts"),
        ],
        widget=forms.RadioSelect,
        help_text="“Deny” cannot be overridden by a request.",
    )

    def __init__(self, *args: Any, providers: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["ignore"]).choices = providers


def _byok_model() -> Any:
    from django.apps import apps

    for label in ("routing", "billing", "accounts"):
        try:
            return apps.get_model(label, "ProviderKey")
        except LookupError:
            continue
    return None


@dashboard_view()
def org_settings(request: DashboardRequest) -> HttpResponse:
    from routing.catalog.snapshot import catalog
    from routing.selectors import catalog_facets

    membership: Membership = request.membership
    org = membership.organization
    providers = catalog_facets(snapshot=catalog.get_sync())["providers"]
    known = {slug for slug, _ in providers}
    defaults = org.routing_defaults or {}
    providers += [(slug, slug) for slug in defaults.get("ignore", []) if slug not in known]
    form = OrgSettingsForm(
        request.POST or None,
        providers=providers,
        initial={
            "name": org.name,
            "ignore": defaults.get("ignore", []),
            "data_collection": defaults.get("data_collection", "allow"),
        },
    )
    if request.method == "POST":
        if membership.role not in MANAGER_ROLES:
            raise PermissionDenied
        if form.is_valid():
            try:
                services.organization_rename(organization=org, name=form.cleaned_data["name"])
                services.organization_routing_defaults_set(
                    organization=org,
                    ignore=form.cleaned_data["ignore"],
                    data_collection=form.cleaned_data["data_collection"],
                )
            except SwitchyardError as exc:
                _error(form, exc)
            else:
                messages.success(request, "Settings saved. Running servers pick them up within seconds.")
                return redirect("settings")
    byok = _byok_model()
    byok_keys = (
        list(byok.objects.filter(organization=org)) if byok is not None and _has_org_fk(byok) else None
    )
    context = {"section": "settings", "form": form, "byok_model": byok, "byok_keys": byok_keys}
    return render_dashboard(request, "dashboard/settings.html", context, status=400 if form.errors else 200)


def _has_org_fk(model: Any) -> bool:
    return any(f.name == "organization" for f in model._meta.get_fields())


class ProfileForm(forms.Form):
    name = forms.CharField(
        max_length=150,
        required=False,
        label="Your name",
        widget=forms.TextInput(attrs={"autocomplete": "name"}),
    )


@login_required
def profile(request: DashboardRequest) -> HttpResponse:
    form = ProfileForm(request.POST or None, initial={"name": request.user.name})
    if request.method == "POST" and form.is_valid():
        services.user_profile_update(user=request.user, name=form.cleaned_data["name"])
        messages.success(request, "Profile saved.")
        return redirect("profile")
    request.membership = current_membership(request)  # type: ignore[assignment]
    return render_dashboard(request, "dashboard/profile.html", {"section": "profile", "form": form})


# --- audit log (owners) ---------------------------------------------------------------------------

AUDIT_PAGE_SIZE = 50
AUDIT_FILTERS = [
    ("", "Everything"),
    ("api_key.", "API keys"),
    ("member.", "Members"),
    ("invitation.", "Invitations"),
    ("credits.", "Credits"),
    ("provider_key.", "Provider keys"),
    ("organization.", "Organisation"),
]


@dashboard_view()
def audit_log(request: DashboardRequest) -> HttpResponse:
    """Security-relevant actions in the organisation; only its owners may read them (others: 403)."""
    from django.core.paginator import Paginator

    if request.membership.role != Role.OWNER:
        raise PermissionDenied("Only owners can read the audit log.")
    action = request.GET.get("action", "")
    if action not in {value for value, _ in AUDIT_FILTERS}:
        action = ""
    page = Paginator(
        selectors.audit_event_list(organization=request.org, action=action or None), AUDIT_PAGE_SIZE
    ).get_page(request.GET.get("page"))
    context = {"section": "audit", "page": page, "filters": AUDIT_FILTERS, "action": action}
    return render_dashboard(request, "dashboard/audit.html", context)
