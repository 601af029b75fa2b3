"""What the dashboard adds beyond the defects (issue 21), in Debian's chromium against the real server:
the keys page's spend column, Activity grouped by key and by member, model pages with live provider
health and code samples, and the playground (stop, markdown, model picker, compare).

Each new page is also checked at 390×844 and 1440×900, light and dark: no sideways scroll and no
axe-core violations.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.dashboard.browser import (
    DESKTOP,
    HOSTILE_KEY_NAME,
    PHONE,
    Seeded,
    axe_source,
    axe_violations,
    horizontal_overflow,
    open_as,
    seed_dashboard,
)
from tests.dashboard.test_browser import browser, browser_marks, orm  # noqa: F401  (browser: a fixture)

pytestmark = browser_marks(300)


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
    from switchyard.money import to_units

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


# --- Activity grouped by key and by member --------------------------------------------------------

CHART_TOTAL = """(n) => {
    const c = window.Chart && Chart.getChart('chart-requests');
    return !!c && c.data.datasets.reduce((a, d) => a + d.data.reduce((x, y) => x + y, 0), 0) === n;
}"""


def _member_request(seeded: Seeded) -> None:
    """One request made with the plain member's own key (every seeded request used the owner's)."""
    from django.utils import timezone

    from accounts.models import ApiKey
    from routing.models import Generation
    from switchyard.money import to_units

    key = ApiKey.objects.get(organization_id=seeded.org_id, name="member laptop")
    Generation.objects.create(
        id="gen-member-0001",
        organization_id=seeded.org_id,
        api_key=key,
        model="switchyard/sim-1",
        provider="simulated",
        status="success",
        tokens_prompt=10,
        tokens_completion=20,
        cost_units=to_units("0.25"),
        latency_ms=40,
        created_at=timezone.now() - timedelta(hours=1),
    )


def _totals(page: Any) -> dict[str, list[str]]:
    rows = page.locator("[data-testid=group-totals] tbody tr")
    out = {}
    for i in range(rows.count()):
        cells = [c.strip() for c in rows.nth(i).locator("td").all_inner_texts()]
        out[cells[0]] = cells[1:]
    return out


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_activity_grouped_by_key_and_by_member_with_totals_charts_and_exports(live, seeded, browser, axe):  # noqa: F811
    orm(_member_request, seeded)
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP, accept_downloads=True)
    page = context.new_page()
    page.goto(live.url + "/dashboard/activity/")
    page.get_by_test_id("group-by").get_by_role("link", name="By key").click()
    page.wait_for_url(re.compile(r"group=key"))
    totals = _totals(page)
    # 18 seeded requests: every third with the hostile-named key, the rest with "staging backend".
    backend = next(name for name in totals if name.startswith("staging backend"))
    hostile = next(name for name in totals if name.startswith(HOSTILE_KEY_NAME))
    assert totals[backend][0] == "12" and totals[hostile][0] == "6"
    assert next(name for name in totals if name.startswith("member laptop"))
    page.wait_for_function(CHART_TOTAL, arg=seeded.total + 1)
    labels = page.evaluate("Chart.getChart('chart-spend').data.datasets.map(d => d.label)")
    assert backend in labels  # series named like the table, not by key id

    page.get_by_test_id("group-by").get_by_role("link", name="By member").click()
    page.wait_for_url(re.compile(r"group=member"))
    totals = _totals(page)
    assert totals["Olivia Owner"][0] == "18"
    assert totals["mark.member@example.com"] == ["1", "30", "$0.25"]
    assert page.get_by_role("heading", name=re.compile("Totals by member")).is_visible()

    # A member filter narrows the table, the chart, the totals and both exports.
    page.get_by_label("Member", exact=True).select_option(label="mark.member@example.com")
    page.wait_for_url(re.compile(r"member=\d+"))
    page.wait_for_function(CHART_TOTAL, arg=1)
    assert page.locator("#activity-table tbody tr").count() == 1
    assert list(_totals(page)) == ["mark.member@example.com"]
    with page.expect_download() as download:
        page.get_by_test_id("export-csv").click()
    rows = _rows(download.value.path().read_text())
    assert len(rows) == 2 and rows[0][-1] == "member" and rows[1][-1] == "mark.member@example.com"
    with page.expect_download() as download:
        page.get_by_test_id("export-totals").click()
    rows = _rows(download.value.path().read_text())
    assert rows[0][:5] == ["member", "name", "requests", "tokens", "cost_usd"]
    assert rows[1][1:5] == ["mark.member@example.com", "1", "30", "0.25"]
    context.close()
    check_everywhere(browser, live, seeded.owner_cookie, "/dashboard/activity/?group=member", axe)


# --- Model pages: providers with live health, charts, code samples, open in playground ------------


def _api_secret(seeded: Seeded) -> str:
    from accounts.models import Organization
    from tests.factories import make_key

    return make_key(Organization.objects.get(pk=seeded.org_id), name="model page calls")[1]


def test_model_page_shows_live_provider_health_charts_and_code_to_try_it(live, seeded, browser, axe):  # noqa: F811
    import openai

    from routing.health import book

    book.reset()
    client = openai.OpenAI(base_url=live.api, api_key=orm(_api_secret, seeded), max_retries=0, timeout=30)
    for _ in range(3):
        reply = client.chat.completions.create(
            model="switchyard/sim-1", messages=[{"role": "user", "content": "health"}]
        )
        assert reply.choices[0].message.content
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP)
    page = context.new_page()
    page.goto(live.url + "/models/switchyard/sim-1")
    card = page.locator("[data-provider=simulated]")
    assert card.locator("[data-stat=prompt]").inner_text().startswith("$0.10")
    assert card.locator("[data-stat=completion]").inner_text().startswith("$0.40")
    assert card.locator("[data-stat=context]").inner_text() == "32,768"
    assert card.locator("[data-stat=uptime]").inner_text() == "100%"
    assert re.fullmatch(r"[\d,]+ ms", card.locator("[data-stat=latency]").inner_text())
    assert "3 requests in 30 minutes" in card.inner_text()
    assert "temperature" in card.locator(".param-chips").inner_text()
    page.wait_for_function("() => window.Chart && Chart.getChart('chart-uptime')")
    # The minute of the three calls, from the router's own health book: the last point, or the one
    # before it when the page was opened in the next minute.
    last = page.evaluate(
        "['chart-uptime', 'chart-latency'].map(id => Chart.getChart(id).data.datasets[0].data.slice(-2))"
    )
    # The simulated model can answer within half a millisecond, so a measured latency may be 0 ms:
    # what matters is that the minute with requests has a latency point (None marks a minute without).
    minute = last[0].index(100)
    assert last[1][minute] is not None and last[1][minute] >= 0, last

    for tab, test_id, needle in (
        ("curl", "sample-curl", '"model": "switchyard/sim-1"'),
        ("Python", "sample-python", 'model="switchyard/sim-1"'),
        ("TypeScript", "sample-typescript", 'model: "switchyard/sim-1"'),
    ):
        page.get_by_role("tab", name=tab, exact=True).click()
        sample = page.get_by_test_id(test_id)
        assert sample.is_visible()
        assert needle in sample.inner_text() and live.url + "/api/v1" in sample.inner_text()

    page.get_by_test_id("open-playground").click()
    page.wait_for_url(re.compile(r"/dashboard/playground/\?model=switchyard%2Fsim-1"))
    assert page.locator("#pg-model").input_value() == "switchyard/sim-1"
    context.close()
    check_everywhere(
        browser,
        live,
        seeded.owner_cookie,
        "/models/switchyard/sim-1",
        axe,
        ready=lambda p: p.wait_for_function("() => window.Chart && Chart.getChart('chart-uptime')"),
    )


# --- Playground: stop, markdown, model picker, compare --------------------------------------------

SLOW_CATALOG = ROOT / "tests" / "data" / "slow_sim_catalog.yaml"


def _load_slow_model() -> None:
    from routing.catalog.loader import catalog_load
    from routing.catalog.snapshot import catalog

    catalog_load([SLOW_CATALOG])
    catalog.clear()


def _send(page: Any, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_role("button", name="Send").click()


def _stopped_generation(org_id: int) -> tuple[str, int]:
    from routing.models import Generation
    from tests.gateway.openai_env import open_holds

    gen = Generation.objects.filter(organization_id=org_id, model="switchyard/sim-slow").first()
    return (gen.status if gen else ""), open_holds(org_id)


def test_playground_stop_keeps_the_partial_answer_and_the_server_settles(live, seeded, browser):  # noqa: F811
    import time

    orm(_load_slow_model)
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP)
    page = context.new_page()
    page.goto(live.url + "/dashboard/playground/?model=switchyard/sim-slow")
    _send(page, "tell me everything")
    answer = page.locator(".pg-assistant .pg-text").last
    page.wait_for_function(
        "() => (document.querySelector('.pg-assistant .pg-text') || {}).textContent.split(' ').length >= 3"
    )
    stop = page.get_by_role("button", name="Stop")
    assert stop.is_visible() and not page.get_by_role("button", name="Send").is_visible()
    stop.click()
    page.locator(".pg-assistant.pg-stopped").wait_for()
    partial = answer.inner_text()
    assert partial.startswith("Hello from Switchyard")
    assert "You said" not in partial  # the rest never came
    assert page.get_by_test_id("pg-usage").inner_text().startswith("Stopped")
    page.wait_for_timeout(700)
    assert answer.inner_text() == partial  # nothing more is painted after Stop
    assert page.get_by_role("button", name="Send").is_enabled()

    deadline = time.monotonic() + 15
    while orm(_stopped_generation, seeded.org_id) != ("cancelled", 0):
        assert time.monotonic() < deadline, orm(_stopped_generation, seeded.org_id)
        time.sleep(0.2)
    context.close()


def test_playground_renders_markdown_safely_with_highlighted_code_and_copy(live, seeded, browser, axe):  # noqa: F811
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP)
    page = context.new_page()
    page.goto(live.url + "/dashboard/playground/?model=switchyard/sim-1")
    # The simulated model echoes the message's first words into its answer: Markdown and hostile HTML.
    hostile = '**bold** `inline` <img src=x onerror="window.pwned=1"> <script>window.pwned=2</script>'
    _send(page, hostile)
    page.get_by_test_id("pg-usage").wait_for(timeout=15000)
    answer = page.locator(".pg-assistant .pg-text").last
    assert answer.locator("strong").inner_text() == "bold"
    assert answer.locator("code").first.inner_text() == "inline"
    assert answer.locator("img, script").count() == 0
    assert '<img src=x onerror="window.pwned=1">' in answer.inner_text()  # shown as text
    assert "<script>window.pwned=2</script>" in answer.inner_text()
    assert page.evaluate("typeof window.pwned") == "undefined"
    context.close()


def test_playground_highlights_code_blocks_with_a_copy_button(live, seeded, browser, monkeypatch, tmp_path):  # noqa: F811
    from tests.fakes.openai_upstream import Behaviour, FakeOpenAIUpstream

    secret = "sk-fake-markdown-" + "M" * 24
    answer_md = "Here:\n\n```python\ndef add(a, b):\n    return a + b  # sum\n```\n\n- one\n- two\n"
    server = FakeOpenAIUpstream(api_key=secret).start()
    try:
        server.set_default(Behaviour(content=answer_md))
        monkeypatch.setenv("SY_TEST_MD_KEY", secret)
        catalog_file = tmp_path / "md.yaml"
        catalog_file.write_text(
            "providers:\n  - slug: fake-md\n    name: Fake Markdown\n    api_format: openai\n"
            f'    base_url: "{server.base_url}/v1"\n    api_key_env: SY_TEST_MD_KEY\n'
            'models:\n  - slug: test/markdown\n    name: "Test: Markdown"\n    context_length: 8192\n'
            "    endpoints:\n      - provider: fake-md\n        provider_model_id: gpt-4o-mini\n"
            '        pricing: {prompt: "0.15", completion: "0.60"}\n        context_length: 8192\n'
        )

        def load() -> None:
            from routing.catalog.loader import catalog_load
            from routing.catalog.snapshot import catalog

            catalog_load([catalog_file])
            catalog.clear()

        orm(load)
        context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP)
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        page = context.new_page()
        page.goto(live.url + "/dashboard/playground/?model=test/markdown")
        _send(page, "show me code")
        page.get_by_test_id("pg-usage").wait_for(timeout=15000)
        answer = page.locator(".pg-assistant .pg-text").last
        code = answer.locator("pre code.language-python")
        assert code.inner_text().startswith("def add(a, b):\n    return a + b")
        assert code.locator(".hljs-keyword").first.inner_text() == "def"
        assert code.locator(".hljs-comment").inner_text() == "# sum"
        assert answer.locator("li").all_inner_texts() == ["one", "two"]
        answer.locator("pre").get_by_role("button", name="Copy").click()
        assert answer.get_by_role("button", name="Copied").is_visible()
        copied = page.evaluate("navigator.clipboard.readText()")
        assert copied == "def add(a, b):\n    return a + b  # sum"
        context.close()
    finally:
        server.stop()


def _answered(page: Any) -> None:
    """The playground with an answer in it, so axe and the layout checks see a rendered answer."""
    page.get_by_label("Message").fill("**Hello** `code` and a [link](https://example.com)")
    page.get_by_role("button", name="Send").click()
    page.get_by_test_id("pg-usage").wait_for(timeout=15000)


def test_playground_model_picker_searches_and_shows_prices(live, seeded, browser, axe):  # noqa: F811
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP)
    page = context.new_page()
    page.goto(live.url + "/dashboard/playground/?model=switchyard/sim-1")
    select = page.get_by_label("Model", exact=True)
    assert "$0.10 in · $0.40 out per M" in page.locator("#pg-model-price").inner_text()
    all_models = select.locator("option:not([hidden])").count()
    page.get_by_label("Find a model").fill("simulated mini")
    visible = select.locator("option:not([hidden])")
    assert visible.count() == 1 < all_models
    assert visible.first.inner_text().startswith("Switchyard: Simulated Mini")
    assert select.input_value() == "switchyard/sim-mini"  # the chosen one was filtered out
    assert page.locator("#pg-model-price").inner_text() == "Price: free"
    assert page.locator("#pg-model-count").inner_text() == "1 model match."
    page.get_by_label("Find a model").fill("")
    assert select.locator("option:not([hidden])").count() == all_models
    context.close()
    check_everywhere(
        browser,
        live,
        seeded.owner_cookie,
        "/dashboard/playground/?model=switchyard/sim-1",
        axe,
        ready=_answered,
    )


def _compare_ready(page: Any) -> None:
    page.locator("main summary", has_text="Settings").evaluate("el => el.parentElement.open = true")
    page.get_by_label("Compare with other models").check()
    page.get_by_label("Model 2").select_option("switchyard/sim-mini")
    _send(page, "compare these")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=pg-usage]').length === 2")


def test_playground_compares_models_side_by_side(live, seeded, browser, axe):  # noqa: F811
    orm(_load_slow_model)
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP)
    page = context.new_page()
    page.goto(live.url + "/dashboard/playground/?model=switchyard/sim-1")
    page.get_by_label("Compare with other models").check()
    page.get_by_label("Model 2").select_option("switchyard/sim-mini")
    page.get_by_label("Model 3").select_option("switchyard/sim-slow")
    columns = page.locator("[data-pg-column]")
    assert columns.count() == 3
    heads = [h.strip() for h in page.locator("[data-pg-col-head]").all_inner_texts()]
    assert heads == [
        "Switchyard: Simulated 1",
        "Switchyard: Simulated Mini (free)",
        "Switchyard: Simulated, slow",
    ]
    boxes = [columns.nth(i).bounding_box() for i in range(3)]
    assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"] and boxes[0]["y"] == boxes[2]["y"]  # side by side
    _send(page, "same prompt for all")
    # The fast ones finish while the slow one still streams; each column has its own figures.
    columns.nth(0).get_by_test_id("pg-usage").wait_for(timeout=15000)
    columns.nth(1).get_by_test_id("pg-usage").wait_for(timeout=15000)
    assert columns.nth(2).get_by_test_id("pg-usage").count() == 0
    columns.nth(2).get_by_test_id("pg-usage").wait_for(timeout=20000)
    for i in range(3):
        meta = columns.nth(i).get_by_test_id("pg-usage").inner_text()
        assert re.search(
            r"\d+ → \d+ tokens · \$[\d.]+ · Switchyard Simulator( \(slow\))? · [\d,]+ ms", meta
        ), meta
        assert (
            "You said: same prompt for all" in columns.nth(i).locator(".pg-assistant .pg-text").inner_text()
        )
    assert "$0 " in columns.nth(1).get_by_test_id("pg-usage").inner_text() + " "  # the free model
    context.close()
    check_everywhere(
        browser,
        live,
        seeded.owner_cookie,
        "/dashboard/playground/?model=switchyard/sim-1",
        axe,
        ready=_compare_ready,
    )
