"""`make screenshots`: every page at phone (390×844) and desktop (1440×900) width, light and dark, as
full-page PNGs under artifacts/screenshots/ (gitignored), from the real server with seeded data.

Not part of `make test` (pytest collects only test_*.py); the Makefile target names this file.
"""

from __future__ import annotations

from typing import Any

from tests.dashboard.browser import (
    DESKTOP,
    PHONE,
    PUBLIC,
    SIGNED_OUT_PAGES,
    dashboard_pages,
    open_as,
    seed_dashboard,
)
from tests.dashboard.test_browser import SHOTS, browser, browser_marks, orm  # noqa: F401  (browser: a fixture)

pytestmark = browser_marks(1200)


def _answer(page: Any, text: str, answers: int) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_role("button", name="Send").click()
    page.wait_for_function(
        "(n) => document.querySelectorAll('[data-testid=pg-usage]').length >= n", arg=answers, timeout=15000
    )


def _answered(page: Any) -> None:
    page.get_by_role("button", name="New chat").click()
    _answer(page, "Write **three** tips for `retries`, with a [link](https://example.com)", 1)
    page.get_by_role("button", name="Recent conversations").click()


def _compared(page: Any) -> None:
    page.locator("main summary", has_text="Settings").evaluate("el => el.parentElement.open = true")
    page.get_by_label("Compare with other models").check()
    page.get_by_label("Model 2").select_option("switchyard/sim-mini")
    _answer(page, "Compare your answers to the same prompt", 2)


def test_screenshots(live, browser):  # noqa: F811
    seeded = orm(seed_dashboard)
    pages = dashboard_pages(seeded)
    out = SHOTS
    out.mkdir(parents=True, exist_ok=True)
    taken = []
    for scheme in ("light", "dark"):
        for label, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
            for who, cookie, names in (
                ("owner", seeded.owner_cookie, list(pages)),
                ("anon", None, [*SIGNED_OUT_PAGES, *(n for n in PUBLIC if n != "not-found")]),
            ):
                context = open_as(browser, live.url, cookie, viewport, color_scheme=scheme)
                page = context.new_page()
                for name in names:
                    path = pages.get(name) or SIGNED_OUT_PAGES[name]
                    page.goto(live.url + path)
                    page.wait_for_load_state("load")
                    page.wait_for_timeout(200)  # charts lay out after load
                    suffix = "" if who == "owner" or name in SIGNED_OUT_PAGES else "-signed-out"
                    file = out / f"{name}{suffix}-{label}-{scheme}.png"
                    page.screenshot(path=str(file), full_page=True)
                    taken.append(file)
                context.close()
            # The playground in use: an answered chat (with the recent list open) and a comparison.
            context = open_as(browser, live.url, seeded.owner_cookie, viewport, color_scheme=scheme)
            page = context.new_page()
            for name, ready in (("playground-answered", _answered), ("playground-compare", _compared)):
                page.goto(live.url + "/dashboard/playground/?model=switchyard/sim-1")
                page.wait_for_load_state("load")
                ready(page)
                file = out / f"{name}-{label}-{scheme}.png"
                page.screenshot(path=str(file), full_page=True)
                taken.append(file)
            context.close()
    print(f"\n{len(taken)} screenshots in {out}")
    assert len(taken) >= 4 * (len(pages) + len(SIGNED_OUT_PAGES) + 2)
