"""What the dashboard adds beyond the defects (issue 21), in Debian's chromium against the real server:
the keys page's spend column, Activity grouped by key and by member, model pages with live provider
health and code samples, and the playground (stop, markdown, model picker, compare).

Each new page is also checked at 390×844 and 1440×900, light and dark: no sideways scroll and no
axe-core violations.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.dashboard.browser import (
    DESKTOP,
    PHONE,
    Seeded,
    axe_source,
    axe_violations,
    horizontal_overflow,
    open_as,
    seed_dashboard,
)
from tests.dashboard.test_browser import CHROMIUM, browser, orm  # noqa: F401  (browser: a fixture)

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="/usr/bin/chromium is missing (apt-get install chromium)"
    ),
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(300),
]


@pytest.fixture
def seeded(live) -> Seeded:
    return orm(seed_dashboard)


@pytest.fixture(scope="session")
def axe() -> str:
    return axe_source()


def check_everywhere(browser: Any, live: Any, cookie: str, path: str, axe: str, ready: Any = None) -> None:  # noqa: F811
    """The page at phone and desktop width, light and dark: no sideways scroll, no axe violations."""
    failures = []
    for viewport, size in ((PHONE, "phone"), (DESKTOP, "desktop")):
        for scheme in ("light", "dark"):
            context = open_as(browser, live.url, cookie, viewport, color_scheme=scheme, bypass_csp=True)
            page = context.new_page()
            page.goto(live.url + path)
            page.wait_for_load_state("load")
            if ready is not None:
                ready(page)
            page.wait_for_timeout(100)
            assert page.evaluate("document.documentElement.dataset.theme") == scheme
            if overflow := horizontal_overflow(page):
                failures.append(f"{size} {scheme}: scrolls sideways {overflow}")
            failures += [f"{size} {scheme}: {v}" for v in axe_violations(page, axe)]
            context.close()
    assert not failures, "\n".join(failures)


# --- API keys: spend today and in the last 7 days -------------------------------------------------


def _spend(seeded: Seeded) -> None:
    from django.utils import timezone

    from billing.models import EntryKind, LedgerEntry
    from billing.money import to_units

    now = timezone.now()
    for i, (usd, ago) in enumerate(
        [("0.50", timedelta(minutes=1)), ("0.25", timedelta(days=3)), ("1.00", timedelta(days=20))]
    ):
        LedgerEntry.objects.create(
            organization_id=seeded.org_id,
            kind=EntryKind.USAGE,
            amount_units=-to_units(usd),
            source=f"gen-spend-{i}",
            api_key_id=seeded.key_id,
            created_at=now - ago,
        )


def test_keys_page_shows_each_keys_spend_today_and_this_week(live, seeded, browser, axe):  # noqa: F811
    orm(_spend, seeded)
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP)
    page = context.new_page()
    page.goto(live.url + "/dashboard/keys/")
    row = page.locator(f"tr[data-key-id='{seeded.key_id}']")
    assert row.locator("[data-col=spend-today]").inner_text().strip() == "$0.50"
    assert row.locator("[data-col=spend-week]").inner_text().strip() == "$0.75"
    assert row.locator("[data-col=usage]").inner_text().strip() == "$1.75"
    other = page.locator(f"tr[data-key-id]:not([data-key-id='{seeded.key_id}'])").first
    assert other.locator("[data-col=spend-today]").inner_text().strip() == "$0.00"
    context.close()
    check_everywhere(browser, live, seeded.owner_cookie, "/dashboard/keys/", axe)
