"""Each defect the dashboard walk-through found (issue 21), reproduced in Debian's chromium and fixed.

The real uvicorn server (`live`) serves the dashboard; Playwright drives the browser with a signed-in
session of the seeded organisation (tests/dashboard/browser.py).
"""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal

import pytest

from tests.dashboard.browser import (
    DESKTOP,
    HOSTILE_KEY_NAME,
    Seeded,
    open_as,
    seed_dashboard,
)
from tests.dashboard.test_browser import browser, browser_marks, orm  # noqa: F401  (browser: a fixture)

pytestmark = browser_marks(300)


@pytest.fixture
def seeded(live) -> Seeded:
    return orm(seed_dashboard)


def _key_count(org_id: int) -> int:
    from accounts.models import ApiKey

    return ApiKey.objects.filter(organization_id=org_id).count()


def test_new_key_secret_is_shown_once_and_reload_creates_nothing(live, seeded, browser):  # noqa: F811
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP)
    page = context.new_page()
    before = orm(_key_count, seeded.org_id)
    page.goto(live.url + "/dashboard/keys/new")
    page.get_by_label("Name").fill("prg key")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("secret").input_value()
    assert secret.startswith("sk-sy-v1-")
    assert orm(_key_count, seeded.org_id) == before + 1
    assert "/dashboard/keys/new" not in page.url  # the secret page is the answer to a GET, not the POST

    page.reload()
    assert orm(_key_count, seeded.org_id) == before + 1
    assert secret not in page.content()
    assert page.get_by_test_id("secret").count() == 0
    assert "shown only once" in page.locator("main").inner_text()

    page.go_back()
    page.go_forward()
    assert orm(_key_count, seeded.org_id) == before + 1
    assert secret not in page.content()
    context.close()


# The requests chart's total, summed over its series, equals n (Chart.js draws it after the htmx swap).
CHART_TOTAL = """(n) => {
    const c = window.Chart && Chart.getChart('chart-requests');
    return !!c && c.data.datasets.reduce((a, d) => a + d.data.reduce((x, y) => x + y, 0), 0) === n;
}"""


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_export_and_charts_follow_the_filters(live, seeded, browser):  # noqa: F811
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP, accept_downloads=True)
    page = context.new_page()
    page.goto(live.url + "/dashboard/activity/?days=90")
    page.wait_for_function(CHART_TOTAL, arg=seeded.total)

    page.get_by_label("Status").select_option("error")
    page.wait_for_url(re.compile(r"status=error"))
    page.wait_for_function(CHART_TOTAL, arg=1)
    assert page.locator("#activity-table tbody tr").count() == 1
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    rows = _rows(download.value.path().read_text())
    assert len(rows) == 2, rows  # the header and the one failed request, not all 18
    assert rows[1][5] == "error"
    assert "days=90" in page.url  # the chart range survives the filter change

    # Formula injection: a key named like a formula is exported as text.
    page.get_by_label("Status").select_option("")
    page.wait_for_function(CHART_TOTAL, arg=seeded.total)
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    rows = _rows(download.value.path().read_text())
    names = {r[4] for r in rows[1:]}
    assert "'" + HOSTILE_KEY_NAME in names and HOSTILE_KEY_NAME not in names
    for row in rows[1:]:
        for cell in row:
            assert not cell or cell[0] not in "=+-@\t\r", row
    context.close()


def _new_user_cookie(email: str) -> str:
    from allauth.account.models import EmailAddress

    from tests.dashboard.browser import session_cookie
    from tests.factories import UserFactory

    user = UserFactory(email=email)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    return session_cookie(user)


def _balance(org_name: str) -> Decimal:
    from accounts.models import Organization
    from billing.selectors import balance_get

    return balance_get(organization=Organization.objects.get(name=org_name))


def _grant(org_name: str, amount: str) -> None:
    from accounts.models import Organization
    from billing.services import credits_grant

    credits_grant(
        organization=Organization.objects.get(name=org_name), amount_usd=Decimal(amount), reason="top up"
    )


def test_starter_credits_and_a_way_to_more_without_stripe(live, browser, settings):  # noqa: F811
    from tests.dashboard.browser import load_catalogs

    settings.STRIPE_API_KEY = ""
    settings.SWITCHYARD_STARTER_CREDITS = "0.000001"
    settings.SWITCHYARD_OPERATOR_CONTACT = "credits@operator.example"
    orm(load_catalogs)
    cookie = orm(_new_user_cookie, "founder@example.com")
    context = open_as(browser, live.url, cookie, DESKTOP)
    page = context.new_page()
    page.goto(live.url + "/dashboard/organizations/new")
    page.get_by_label("Organisation name").fill("Starter Labs")
    page.get_by_role("button", name="Create organisation").click()
    page.wait_for_url("**/dashboard/keys/")
    assert orm(_balance, "Starter Labs") == Decimal("0.000001")

    # No Stripe: the owner is told to ask the operator, with the operator's contact.
    page.goto(live.url + "/dashboard/credits/")
    main = page.locator("main").inner_text()
    assert "ask your operator" in main.lower() and "credits@operator.example" in main
    assert "STRIPE" not in page.content().upper()

    # The starter grant does not cover a request: the 402 links to Credits and the message can be retried.
    page.goto(live.url + "/dashboard/playground/?model=switchyard/sim-1")
    page.get_by_label("Message").fill("Hello there")
    page.get_by_label("Message").press("Enter")
    error = page.locator("[data-pg-error]")
    error.wait_for(state="visible", timeout=15000)
    assert (
        error.get_by_role("link", name=re.compile("Credits")).get_attribute("href") == "/dashboard/credits/"
    )
    orm(_grant, "Starter Labs", "5")
    page.get_by_role("button", name="Retry").click()
    page.get_by_test_id("pg-usage").wait_for(timeout=15000)
    assert page.locator(".pg-user").count() == 1  # retried, not sent twice
    assert error.is_hidden()
    context.close()


def test_members_see_nothing_about_stripe(live, seeded, browser, settings):  # noqa: F811
    settings.STRIPE_API_KEY = ""
    settings.SWITCHYARD_OPERATOR_CONTACT = "credits@operator.example"
    context = open_as(browser, live.url, seeded.member_cookie, DESKTOP)
    page = context.new_page()
    page.goto(live.url + "/dashboard/credits/")
    assert "STRIPE" not in page.content().upper()
    assert "owner" in page.locator("main").inner_text().lower()
    context.close()


# Emoji (and other pictographs) that render as empty boxes where no emoji font is installed.
EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf\u2b50\u2b55]")


def test_empty_states_use_svg_icons_not_emoji(live, browser):  # noqa: F811
    from tests.dashboard.browser import load_catalogs

    orm(load_catalogs)
    cookie = orm(_new_user_cookie, "empty@example.com")
    context = open_as(browser, live.url, cookie, DESKTOP)
    page = context.new_page()
    page.goto(live.url + "/dashboard/organizations/new")
    page.get_by_label("Organisation name").fill("Empty Labs")
    page.get_by_role("button", name="Create organisation").click()
    page.wait_for_url("**/dashboard/keys/")
    for path in (
        "/dashboard/keys/",
        "/dashboard/activity/",
        "/dashboard/settings/provider-keys/",
        "/dashboard/",
    ):
        page.goto(live.url + path)
        assert not EMOJI.search(page.locator("main").inner_text()), path
        icons = page.locator("main .empty-icon, main .week-empty-icon")
        assert icons.count() >= 1, path
        for i in range(icons.count()):
            assert icons.nth(i).locator("svg").count() == 1, path
    context.close()


def test_not_found_and_server_error_pages_and_the_favicon(live, browser, settings):  # noqa: F811
    settings.ROOT_URLCONF = "tests.dashboard.crash_urls"
    context = open_as(browser, live.url, None, DESKTOP)
    page = context.new_page()
    for path, status, title in (
        ("/no-such-page", 404, "Page not found"),
        ("/test-crash", 500, "Something went wrong"),
    ):
        response = page.goto(live.url + path)
        assert response.status == status
        assert page.locator("h1").inner_text() == title
        assert "URLconf" not in page.content() and "Traceback" not in page.content()
        # Styled: the app's stylesheet applies (cards have a border radius) and the way home is a button.
        assert page.evaluate("() => getComputedStyle(document.querySelector('.card')).borderRadius") != "0px"
        assert page.get_by_role("link", name="Go home").is_visible()
        assert page.locator("link[rel=icon]").count() >= 1

    icon = page.request.get(live.url + "/favicon.ico")
    assert icon.status == 200 and icon.headers["content-type"] in ("image/x-icon", "image/vnd.microsoft.icon")
    assert icon.body()[:4] == b"\x00\x00\x01\x00"  # an ICO file
    svg = page.locator("link[rel=icon][type='image/svg+xml']").get_attribute("href")
    assert page.request.get(live.url + svg).status == 200
    context.close()


def _contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    def lum(rgb: tuple[int, int, int]) -> float:
        parts = [c / 255 for c in rgb]
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in parts]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    high, low = sorted([lum(a), lum(b)], reverse=True)
    return (high + 0.05) / (low + 0.05)


def _rgb(css: str) -> tuple[int, int, int]:
    values = re.findall(r"[\d.]+", css)
    assert len(values) == 3 or (len(values) == 4 and float(values[3]) == 1), f"not an opaque colour: {css}"
    return (int(float(values[0])), int(float(values[1])), int(float(values[2])))


def test_focus_ring_has_three_to_one_contrast(live, seeded, browser):  # noqa: F811
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP)
    page = context.new_page()
    page.goto(live.url + "/dashboard/keys/new")
    page.get_by_label("Name").focus()
    page.wait_for_function("() => document.getAnimations().length === 0")  # the ring's transition ended
    shadow = page.evaluate("() => getComputedStyle(document.activeElement).boxShadow")
    ring = re.findall(r"rgba?\([^)]*\)", shadow)[-1]  # the outer ring; the inner one is the gap
    assert _contrast(_rgb(ring), (255, 255, 255)) >= 3, shadow
    page.keyboard.press("Shift+Tab")  # keyboard focus on a link or button shows an outline
    outline = page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineColor]; }"
    )
    assert outline[0] == "solid" and _contrast(_rgb(outline[1]), (246, 247, 251)) >= 3, outline
    context.close()


def _generation_count(org_id: int) -> int:
    from routing.models import Generation

    return Generation.objects.filter(organization_id=org_id).count()


def test_playground_max_tokens_zero_is_refused_and_empty_means_no_limit(live, seeded, browser):  # noqa: F811
    from tests.conftest import flush_usage

    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP)
    page = context.new_page()
    page.goto(live.url + "/dashboard/playground/?model=switchyard/sim-1")
    before = orm(_generation_count, seeded.org_id)
    field = page.get_by_label("Max tokens")
    field.fill("0")
    page.get_by_label("Message").fill("Hello")
    page.get_by_role("button", name="Send").click()
    error = page.locator("[data-pg-error]")
    error.wait_for(state="visible")
    assert "at least 1" in error.inner_text()
    assert field.get_attribute("aria-invalid") == "true"
    assert page.locator(".pg-user").count() == 0  # nothing was sent
    orm(flush_usage)
    assert orm(_generation_count, seeded.org_id) == before

    # The API refuses 0 too (a 400 naming the field), whatever a client sends.
    key = page.evaluate(
        "async () => (await (await fetch('/dashboard/playground/key', {method: 'POST', headers: {'X-CSRFToken':"
        " JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken']}})).json()).key"
    )
    refused = page.request.post(
        live.api + "/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        data={"model": "switchyard/sim-1", "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert refused.status == 400 and "max_tokens" in refused.text()

    # Empty: "no limit", said on the page, and the message goes.
    field.fill("")
    assert field.get_attribute("placeholder") == "No limit"
    assert "no limit" in page.locator("#pg-max-tokens-help").inner_text().lower()
    page.get_by_role("button", name="Send").click()
    page.get_by_test_id("pg-usage").wait_for(timeout=15000)
    assert error.is_hidden()
    context.close()


def test_audit_details_are_readable_and_not_clipped(live, seeded, browser):  # noqa: F811
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP)
    page = context.new_page()
    page.goto(live.url + "/dashboard/audit/")
    details = page.locator("main table tbody [data-col=details]")
    text = details.all_inner_texts()
    joined = "\n".join(text)
    assert "Limit: none" in joined and "Limit: $5.00" in joined
    assert "Amount: $9.9997848" in joined or "Amount: $10.00" in joined
    assert "None" not in joined and "_units" not in joined and "limit_reset=" not in joined
    clipped = page.evaluate(
        """() => [...document.querySelectorAll('main .table-wrap, main [data-col=details]')]
            .filter(el => el.scrollWidth > el.clientWidth + 1).map(el => el.className || el.dataset.col)"""
    )
    assert clipped == []
    context.close()


ONE_DATE_FORMAT = re.compile(r"^[A-Z][a-z]{2} \d{1,2}, \d{4}(, \d{2}:\d{2})?$")


def _first_generation_local(org_id: int, zone: str) -> str:
    from zoneinfo import ZoneInfo

    from routing.models import Generation

    moment = Generation.objects.filter(organization_id=org_id).latest("created_at").created_at
    local = moment.astimezone(ZoneInfo(zone))
    return f"{local:%b} {local.day}, {local.year}, {local:%H:%M}"


def test_one_formatter_each_for_money_dates_and_provider_names(live, seeded, browser):  # noqa: F811
    zone = "America/New_York"
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP, timezone_id=zone)
    page = context.new_page()

    # Money: two decimals, the exact amount on hover.
    page.goto(live.url + "/dashboard/")
    balance = page.get_by_test_id("balance")
    assert balance.inner_text() == "$10.00"
    assert balance.locator("[title]").get_attribute("title") == "$9.9997848"

    # Provider display names, in the table, the filter and the chart legend.
    page.goto(live.url + "/dashboard/activity/?group=provider")
    providers = page.locator("main table tbody [data-col=provider]").all_inner_texts()
    assert providers and set(providers) == {"Switchyard Simulator"}
    assert page.get_by_label("Provider").locator("option").all_inner_texts() == [
        "All providers",
        "Switchyard Simulator",
    ]
    page.wait_for_function("() => window.Chart && Chart.getChart('chart-spend')")
    assert page.evaluate("Chart.getChart('chart-spend').data.datasets[0].label") == "Switchyard Simulator"

    # Dates: one format, in the viewer's time zone.
    first = page.locator("main table tbody [data-col=time]").first.inner_text()
    assert first == orm(_first_generation_local, seeded.org_id, zone)
    for path, col in (
        ("/dashboard/keys/", "created"),
        ("/dashboard/audit/", "when"),
        ("/dashboard/members/", "joined"),
    ):
        page.goto(live.url + path)
        for text in page.locator(f"main table tbody [data-col={col}] time").all_inner_texts():
            assert ONE_DATE_FORMAT.match(text.strip()), (path, text)

    # BYOK dropdown: names, not slugs.
    page.goto(live.url + "/dashboard/settings/provider-keys/")
    options = page.get_by_label("Provider").locator("option").all_inner_texts()
    assert "OpenAI" in options and "openai" not in options
    context.close()


def _background_luminance(page) -> float:
    rgb = _rgb(page.evaluate("() => getComputedStyle(document.body).backgroundColor"))
    return _contrast(rgb, (0, 0, 0))  # 1.0 for black; about 21 for white


def test_dark_mode_follows_the_system_and_the_toggle_is_remembered(live, seeded, browser):  # noqa: F811
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP, color_scheme="dark")
    page = context.new_page()
    page.goto(live.url + "/dashboard/")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert _background_luminance(page) < 2
    toggle = page.locator("[data-theme-toggle]").first
    assert toggle.get_attribute("aria-pressed") == "true"
    toggle.click()
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    assert _background_luminance(page) > 15
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") == "light"  # remembered
    page.goto(live.url + "/models")  # the public pages share the choice
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    context.close()


def test_overview_requests_line_is_not_smoothed(live, seeded, browser):  # noqa: F811
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP)
    page = context.new_page()
    page.goto(live.url + "/dashboard/")
    page.wait_for_function("() => window.Chart && Chart.getChart('chart-week')")
    line = page.evaluate(
        "(() => { const d = Chart.getChart('chart-week').data.datasets.find(d => d.type === 'line');"
        " const m = Chart.getChart('chart-week').getDatasetMeta(0); return [d.tension || 0, d.cubicInterpolationMode || 'default', m.dataset.options.tension]; })()"
    )
    assert line == [0, "default", 0]
    context.close()


def test_activity_shows_a_loading_state_while_filters_update(live, seeded, browser):  # noqa: F811
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP)
    page = context.new_page()
    page.goto(live.url + "/dashboard/activity/")
    held = []
    page.route(re.compile(r".*/dashboard/activity/\?.*status=error.*"), lambda route: held.append(route))
    page.get_by_label("Status").select_option("error")
    page.wait_for_function(
        "() => document.getElementById('activity-results').getAttribute('aria-busy') === 'true'"
    )
    assert (
        page.locator("#activity-results .loading-bar").evaluate("el => getComputedStyle(el).opacity") == "1"
    )
    assert held, "the filter request was not sent"
    held[0].continue_()
    page.wait_for_function("() => document.querySelectorAll('#activity-table tbody tr').length === 1")
    assert page.locator("#activity-results").get_attribute("aria-busy") is None
    context.close()
