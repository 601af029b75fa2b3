"""The dashboard in a real browser (Debian's chromium via Playwright) against the real uvicorn server.

One journey: sign up, verify the email from the file backend, create an organisation and a key, call the
API with the openai SDK, find the call in activity and its charts, chat in the playground, invite a
member who accepts and gets member limits. Every page is saved as a full-page screenshot at desktop and
phone width in artifacts/screenshots/.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from tests.conftest import DEFAULT_CATALOG, ROOT, flush_usage

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "Switchyard-browser-9!"


def browser_marks(timeout: int) -> list[pytest.MarkDecorator]:
    """The marks every browser test module carries: chromium present, a committed database the live
    server can see, and the module's own time limit."""
    return [
        pytest.mark.skipif(
            not CHROMIUM.exists(), reason="/usr/bin/chromium is missing (apt-get install chromium)"
        ),
        pytest.mark.django_db(transaction=True),
        pytest.mark.timeout(timeout),
    ]


pytestmark = browser_marks(300)


@pytest.fixture
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def mail_dir(settings, tmp_path):
    """The file email backend, as in embedded mode, writing where this test can read it."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = str(tmp_path / "emails")
    return tmp_path / "emails"


@pytest.fixture
def catalogs(transactional_db):
    from routing.catalog.loader import catalog_load
    from routing.catalog.snapshot import catalog

    catalog_load([DEFAULT_CATALOG])  # a full catalog for the public pages
    catalog_load([ROOT / "tests" / "data" / "sim_catalog.yaml"])  # the model the journey calls
    catalog.clear()


def orm(fn, *args, **kwargs):
    """Run ORM work off this thread: Playwright's sync API keeps an event loop running here, and Django
    (rightly) refuses sync ORM calls from a thread with a running loop."""

    def run():
        from django.db import connections

        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def link_in_mail(mail_dir: Path, to: str, pattern: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mail_dir.exists():
            for path in sorted(mail_dir.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
                text = path.read_text()
                if f"To: {to}" in text:
                    found = re.search(pattern, text)
                    if found:
                        return found.group(0)
        time.sleep(0.1)
    raise AssertionError(f"no email to {to} with {pattern!r} in {mail_dir}")


class Shooter:
    """Full-page screenshots of the current page at desktop (1280) and phone (390) width."""

    def __init__(self) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def __call__(self, page, name: str) -> None:
        for label, width, height in (("desktop", 1280, 800), ("phone", 390, 844)):
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(150)  # let responsive charts re-layout
            path = SHOTS / f"{name}-{label}.png"
            page.screenshot(path=str(path), full_page=True)
            self.taken.append(path)
        page.set_viewport_size({"width": 1280, "height": 800})


def sign_up_and_verify(page, base: str, email: str, mail_dir: Path, shoot: Shooter | None = None) -> None:
    page.goto(f"{base}/accounts/signup/")
    if shoot:
        shoot(page, "signup")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password (again)").fill(PASSWORD)
    page.get_by_role("button", name="Sign Up").click()
    page.wait_for_url("**/accounts/confirm-email/")
    if shoot:
        shoot(page, "verify-email-sent")
    link = link_in_mail(mail_dir, email, r"http://127\.0\.0\.1:\d+/accounts/confirm-email/\S+")
    page.goto(link)
    if shoot:
        shoot(page, "verify-email-confirm")
    page.get_by_role("button", name="Confirm").click()


def test_dashboard_journey(live, catalogs, browser, mail_dir):
    from accounts.models import ApiKey, Membership, Organization, Role
    from billing.services import credits_grant
    from routing.models import Generation

    base = live.url
    shoot = Shooter()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Public pages.
    page.goto(base + "/")
    count = int(page.get_by_test_id("model-count").inner_text())
    assert count > 50
    assert f"{base}/api/v1/chat/completions" in page.content()
    shoot(page, "landing")
    page.goto(base + "/models")
    page.get_by_label("Search").fill("claude")
    page.wait_for_function(  # an arrow function: a bare expression would need eval, which the CSP forbids
        f"() => document.querySelector('[data-testid=result-count]').textContent !== '{count}'"
    )
    assert "q=claude" in page.url  # htmx pushed the filter into the URL
    rows = page.locator("#model-results tbody tr")
    assert rows.count() >= 1 and "openai/" not in page.locator("#model-results").inner_text()
    page.get_by_label("Search").fill("")
    page.get_by_label("Sort").select_option("-context")
    page.wait_for_url(re.compile(r"sort=-context"))
    shoot(page, "models")
    page.goto(base + "/models/openai/gpt-4o-mini")
    assert "$0.15" in page.content()
    shoot(page, "model")
    page.goto(base + "/docs")
    shoot(page, "docs")
    page.goto(base + "/accounts/login/")
    shoot(page, "login")
    page.goto(base + "/accounts/password/reset/")
    shoot(page, "password-reset")

    # Sign up, verify, create an organisation.
    owner_email = "owner@browser.test"
    sign_up_and_verify(page, base, owner_email, mail_dir, shoot)
    page.wait_for_url("**/dashboard/organizations/new")
    shoot(page, "org-create-first")
    page.get_by_label("Organisation name").fill("Browser Labs")
    page.get_by_role("button", name="Create organisation").click()
    page.wait_for_url("**/dashboard/keys/")
    assert "No API keys yet" in page.content()
    shoot(page, "keys-empty")
    org = orm(Organization.objects.get, name="Browser Labs")
    assert orm(lambda: Membership.objects.get(organization=org, user__email=owner_email).role) == Role.OWNER
    page.goto(base + "/dashboard/")
    week_card = page.get_by_test_id("overview-chart")
    assert "No requests yet" in week_card.inner_text() and week_card.locator("canvas").count() == 0
    shoot(page, "overview-new")
    page.goto(base + "/dashboard/activity/")
    assert "No requests yet" in page.content()
    shoot(page, "activity-empty")
    page.goto(base + "/dashboard/credits/")
    assert "ask your operator" in page.content() and "STRIPE" not in page.content()

    # Credits (an admin grant) and a key.
    orm(credits_grant, organization=org, amount_usd=Decimal("5"), reason="browser test credits")
    page.goto(base + "/dashboard/keys/new")
    shoot(page, "key-new")
    page.get_by_role("button", name="Create key").click()  # empty name: a helpful error, nothing created
    assert "This field is required" in page.content()
    page.get_by_label("Name").fill("backend")
    page.get_by_label("Credit limit (USD)").fill("2")
    page.get_by_label("Limit resets").select_option("daily")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("secret").input_value()
    assert secret.startswith("sk-sy-v1-")
    shoot(page, "key-created")

    # Call the API with the key through the official SDK.
    client = openai.OpenAI(base_url=live.api, api_key=secret, max_retries=0)
    reply = client.chat.completions.create(
        model="switchyard/sim-1", messages=[{"role": "user", "content": "Hello from the browser test"}]
    )
    assert reply.id.startswith("gen-")
    orm(flush_usage)

    page.goto(base + "/dashboard/keys/")
    assert "backend" in page.content() and secret not in page.content()
    shoot(page, "keys")
    page.goto(base + "/dashboard/activity/")
    assert reply.id in page.content()
    page.wait_for_function(
        "() => window.Chart && Chart.getChart('chart-spend') && Chart.getChart('chart-requests')"
    )
    requests_total = page.evaluate(
        "Chart.getChart('chart-requests').data.datasets.reduce((a, d) => a + d.data.reduce((x, y) => x + y, 0), 0)"
    )
    assert requests_total == 1
    shoot(page, "activity")
    # The CSV export through the real ASGI server (streamed by an async iterator there).
    export = page.request.get(base + "/dashboard/activity/export.csv")
    assert export.status == 200 and export.headers["content-type"].startswith("text/csv")
    csv_lines = export.text().strip().splitlines()
    assert csv_lines[0].startswith("id,created_at,model,provider") and len(csv_lines) == 2
    assert csv_lines[1].startswith(reply.id + ",")
    page.goto(f"{base}/dashboard/activity/?group=provider&days=7")
    page.wait_for_function("() => window.Chart && Chart.getChart('chart-tokens')")
    assert page.evaluate("Chart.getChart('chart-spend').data.datasets[0].label") == "Switchyard Simulator"
    page.locator("#activity-table tbody [data-col=time] a").first.click()
    page.wait_for_url(f"**/dashboard/activity/{reply.id}")
    assert "Routing attempts" in page.content()
    shoot(page, "generation")

    # Playground: streams through the public API with a hidden key.
    page.goto(base + "/dashboard/playground/")
    page.get_by_label("Model", exact=True).select_option("switchyard/sim-1")
    page.get_by_label("Message").fill("Say something")
    page.get_by_label("Message").press("Enter")
    usage = page.get_by_test_id("pg-usage")
    usage.wait_for(timeout=15000)
    assert re.search(r"\d+ → \d+ tokens · \$[0-9.e-]+ · ", usage.inner_text())
    assert "simulated" in page.locator(".pg-assistant .pg-text").first.inner_text()
    shoot(page, "playground")
    playground_key = orm(ApiKey.objects.get, organization=org, name="Playground")
    assert playground_key.prefix not in page.content()
    page.goto(base + "/dashboard/keys/")
    assert "Playground key" in page.locator("main").inner_text()  # owners see (and can revoke) every key

    page.goto(base + "/dashboard/credits/")
    assert "browser test credits" in page.content() and "Usage" in page.content()
    shoot(page, "credits")
    orm(flush_usage)
    page.goto(base + "/dashboard/")
    page.wait_for_function("() => window.Chart && Chart.getChart('chart-week')")
    week = page.evaluate(
        "(() => { const c = Chart.getChart('chart-week'); return {labels: c.data.labels,"
        " sets: c.data.datasets.map(d => [d.label, d.data]), ready: c.canvas.dataset.chartReady}; })()"
    )
    assert len(week["labels"]) == 7 and week["ready"] == "true"
    sets = dict(week["sets"])
    assert set(sets) == {"Spend", "Requests"} and all(len(v) == 7 for v in sets.values())
    made = orm(lambda: Generation.objects.filter(organization=org).count())
    assert sum(sets["Requests"]) == made >= 2 and sets["Spend"][-1] > 0  # the SDK call and the playground's
    shoot(page, "overview")
    page.goto(base + "/dashboard/settings/")
    page.get_by_label("Deny: only use providers that do not train on prompts").check()
    page.get_by_role("button", name="Save settings").click()
    page.wait_for_url("**/dashboard/settings/")
    orm(org.refresh_from_db)
    assert org.routing_defaults == {"data_collection": "deny"}
    shoot(page, "settings")
    page.goto(base + "/dashboard/profile/")
    page.get_by_label("Your name").fill("Olivia Owner")
    page.get_by_role("button", name="Save").click()
    shoot(page, "profile")

    # Invite a member, who signs up, accepts and gets member limits.
    member_email = "member@browser.test"
    page.goto(base + "/dashboard/members/")
    page.get_by_label("Email address").fill(member_email)
    page.get_by_label("Role").select_option("member")
    page.get_by_role("button", name="Send invitation").click()
    assert member_email in page.locator("main").inner_text()
    shoot(page, "members")
    invite = link_in_mail(mail_dir, member_email, r"http://127\.0\.0\.1:\d+/invitations/\S+/")

    other = browser.new_context(viewport={"width": 1280, "height": 800})
    mpage = other.new_page()
    mpage.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_up_and_verify(mpage, base, member_email, mail_dir)
    mpage.goto(invite)
    shoot(mpage, "invitation")
    mpage.get_by_role("button", name="Accept invitation").click()
    mpage.wait_for_url("**/dashboard/")
    assert "Browser Labs" in mpage.content()
    assert orm(lambda: Membership.objects.get(organization=org, user__email=member_email).role) == Role.MEMBER
    shoot(mpage, "overview-member")
    mpage.goto(base + "/dashboard/keys/")
    assert "backend" not in mpage.locator("main").inner_text()
    owner_key = orm(ApiKey.objects.get, organization=org, name="backend")
    response = mpage.goto(f"{base}/dashboard/keys/{owner_key.pk}/edit")
    assert response.status == 404
    mpage.goto(base + "/dashboard/members/")
    assert mpage.get_by_role("button", name="Send invitation").count() == 0
    mpage.goto(base + "/dashboard/credits/")
    assert mpage.get_by_role("button", name="Continue to checkout").count() == 0
    mpage.goto(base + "/dashboard/activity/")
    assert reply.id in mpage.content()  # members see the organisation's activity
    mpage.goto(base + "/dashboard/keys/new")
    mpage.get_by_label("Name").fill("member key")
    mpage.get_by_role("button", name="Create key").click()
    assert mpage.get_by_test_id("secret").input_value().startswith("sk-sy-v1-")
    mpage.goto(base + "/dashboard/settings/")
    assert mpage.get_by_role("button", name="Save settings").count() == 0
    other.close()

    # The mobile menu opens from the keyboard.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(base + "/dashboard/")
    nav_link = page.locator(".sidenav").get_by_role("link", name="Activity", exact=True)
    assert not nav_link.is_visible()
    page.locator(".nav-toggle summary").focus()
    page.keyboard.press("Enter")
    assert nav_link.is_visible()
    shoot(page, "menu-open")

    assert not errors, errors
    assert len(shoot.taken) >= 40
    context.close()
