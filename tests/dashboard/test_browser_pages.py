"""Every page in Debian's chromium at phone (390×844) and desktop (1440×900) width: no sideways scroll,
and (axe-core) no accessibility violations. Pages come from tests/dashboard/browser.py, checked here
against the URL configuration so a new page cannot slip past these checks.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from tests.dashboard.browser import (
    DESKTOP,
    LONG_MODEL,
    NOT_PAGES,
    PAGE_ROUTES,
    PHONE,
    PUBLIC,
    SIGNED_OUT_PAGES,
    Seeded,
    axe_source,
    axe_violations,
    dashboard_pages,
    horizontal_overflow,
    open_as,
    seed_dashboard,
)
from tests.dashboard.test_browser import browser, browser_marks, orm  # noqa: F401  (browser: a fixture)

pytestmark = browser_marks(600)


def _page_route_names() -> set[str]:
    names: set[str] = set()

    def walk(patterns: list[Any], prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern) and p.name:
                if not (prefix + str(p.pattern)).startswith(("admin/", "accounts/", "api/")):
                    names.add(p.name)

    walk(get_resolver().url_patterns, "")
    return names


def test_every_dashboard_route_is_a_checked_page_or_not_a_page():
    routes = _page_route_names()
    assert routes - set(PAGE_ROUTES) - NOT_PAGES == set(), "add the new page to tests/dashboard/browser.py"
    assert set(PAGE_ROUTES) | NOT_PAGES <= routes


@pytest.fixture
def seeded(live) -> Seeded:
    return orm(seed_dashboard)


def _visit(page: Any, base: str, path: str) -> None:
    page.goto(base + path)
    page.wait_for_load_state("load")
    page.wait_for_timeout(100)  # responsive charts re-layout after load


# A line break inside a word: two letters or digits on either side of a break between lines.
MID_WORD_BREAKS = """(el) => {
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    const chars = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (let i = 0; i < node.data.length; i++) {
            const r = document.createRange();
            r.setStart(node, i); r.setEnd(node, i + 1);
            const rect = r.getBoundingClientRect();
            if (rect.width) chars.push([node.data[i], rect.top]);
        }
    }
    const bad = [];
    for (let i = 1; i < chars.length; i++) {
        if (chars[i][1] > chars[i - 1][1] + 2 && /[A-Za-z0-9]/.test(chars[i - 1][0]) && /[A-Za-z0-9]/.test(chars[i][0])) {
            bad.push(chars.slice(Math.max(0, i - 6), i).map(c => c[0]).join('') + '|' + chars.slice(i, i + 6).map(c => c[0]).join(''));
        }
    }
    return bad;
}"""


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_no_page_scrolls_sideways(live, seeded, browser, viewport):  # noqa: F811
    owner = open_as(browser, live.url, seeded.owner_cookie, viewport)
    anon = open_as(browser, live.url, None, viewport)
    failures: dict[str, Any] = {}
    page = owner.new_page()
    for name, path in dashboard_pages(seeded).items():
        _visit(page, live.url, path)
        if overflow := horizontal_overflow(page):
            failures[name] = overflow
    signed_out = anon.new_page()
    for name, path in {**SIGNED_OUT_PAGES, **{n: dashboard_pages(seeded)[n] for n in PUBLIC}}.items():
        _visit(signed_out, live.url, path)
        if overflow := horizontal_overflow(signed_out):
            failures[f"{name} (signed out)"] = overflow
    assert not failures, "\n".join(f"{name}: {why}" for name, why in failures.items())
    owner.close()
    anon.close()


def _in_view(page: Any, locator: Any) -> bool:
    box = locator.bounding_box()
    size = page.viewport_size
    return bool(box) and box["x"] >= 0 and box["x"] + box["width"] <= size["width"] + 0.5


def test_phone_shows_cost_and_status_and_breaks_model_ids_between_words(live, seeded, browser):  # noqa: F811
    context = open_as(browser, live.url, seeded.owner_cookie, PHONE)
    page = context.new_page()
    for path in ("/dashboard/activity/", "/dashboard/"):
        _visit(page, live.url, path)
        row = page.locator("main table:not([data-testid=group-totals]) tbody tr").first  # the requests
        for what in ("cost", "status"):
            cell = row.locator(f"[data-col={what}]")
            assert cell.is_visible() and _in_view(page, cell), (path, what)
        models = page.locator("main table tbody [data-col=model]").filter(has_text=LONG_MODEL)
        assert models.count() >= 1
        for i in range(models.count()):
            assert page.evaluate(MID_WORD_BREAKS, models.nth(i).element_handle()) == [], path

    # The playground: the message box is on screen without scrolling; settings fold away under it.
    _visit(page, live.url, "/dashboard/playground/")
    box = page.get_by_label("Message").bounding_box()
    assert box and box["y"] + box["height"] <= PHONE["height"], box
    assert not page.get_by_label("Model", exact=True).is_visible()
    page.locator("main summary", has_text="Settings").click()
    assert page.get_by_label("Model", exact=True).is_visible()
    context.close()


@pytest.fixture(scope="session")
def axe() -> str:
    return axe_source()


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_no_page_has_accessibility_violations(live, seeded, browser, viewport, axe):  # noqa: F811
    # bypass_csp: the pages allow only their own script files, and axe-core is injected inline.
    owner = open_as(browser, live.url, seeded.owner_cookie, viewport, bypass_csp=True)
    anon = open_as(browser, live.url, None, viewport, bypass_csp=True)
    failures: dict[str, list[str]] = {}
    page = owner.new_page()
    for name, path in dashboard_pages(seeded).items():
        _visit(page, live.url, path)
        if found := axe_violations(page, axe):
            failures[name] = found
    signed_out = anon.new_page()
    for name, path in SIGNED_OUT_PAGES.items():
        _visit(signed_out, live.url, path)
        if found := axe_violations(signed_out, axe):
            failures[f"{name} (signed out)"] = found
    assert not failures, "\n".join(f"{name}: {v}" for name, found in failures.items() for v in found)
    owner.close()
    anon.close()
