"""The playground keeps its conversations in the browser (issue 21), in Debian's chromium against the
real server: restored on reload in single and compare modes, one store per organisation and per user,
New chat and a list of recent conversations, answers restored through the sanitising Markdown renderer,
and a full, blocked or garbled localStorage survived.
"""

from __future__ import annotations

import json
from typing import Any

from tests.dashboard.browser import DESKTOP, Seeded, open_as, session_cookie
from tests.dashboard.test_browser import browser, browser_marks, orm  # noqa: F401  (browser: a fixture)
from tests.dashboard.test_browser_features import (  # noqa: F401  (axe, seeded: fixtures)
    _send,
    axe,
    check_everywhere,
    seeded,
)

pytestmark = browser_marks(300)

PLAYGROUND = "/dashboard/playground/?model=switchyard/sim-1"
HOSTILE = '**bold** <img src=x onerror="window.pwned=1"> here'
SECRET = """async () => {
    const root = document.querySelector('[data-playground]');
    const csrf = JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken'];
    const r = await fetch(root.dataset.keyUrl, {method: 'POST', headers: {'X-CSRFToken': csrf}});
    return (await r.json()).key;
}"""


def _errors(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def _answer(page: Any, text: str, answers: int = 1) -> None:
    _send(page, text)
    page.wait_for_function(
        "(n) => document.querySelectorAll('[data-testid=pg-usage]').length >= n", arg=answers, timeout=15000
    )
    page.wait_for_function("() => !document.querySelector('[data-pg-stop]:not([hidden])')")


def _messages(page: Any, column: int = 0) -> list[str]:
    col = page.locator("[data-pg-column]").nth(column)
    return [t.strip() for t in col.locator(".pg-msg .pg-text").all_inner_texts()]


def _store(page: Any) -> str:
    return page.evaluate("document.querySelector('[data-playground]').dataset.store")


def _recent_titles(page: Any) -> list[str]:
    return [t.strip() for t in page.locator(".pg-recent-title").all_inner_texts()]


def _open_recent(page: Any) -> None:
    toggle = page.get_by_role("button", name="Recent conversations")
    if toggle.get_attribute("aria-expanded") != "true":
        toggle.click()


def test_reload_restores_the_conversation_its_models_and_settings_without_the_key(live, seeded, browser):  # noqa: F811
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP)
    page = context.new_page()
    errors = _errors(page)
    page.goto(live.url + PLAYGROUND)
    page.get_by_label("Max tokens").fill("64")
    page.get_by_label("Max tokens").dispatch_event("change")
    page.get_by_label("System prompt").fill("Be brief.")
    page.get_by_label("System prompt").dispatch_event("change")
    _answer(page, HOSTILE)
    live_answer = page.locator(".pg-assistant .pg-text").last.inner_text()

    page.reload()
    answer = page.locator(".pg-assistant .pg-text").last
    answer.wait_for()
    assert _messages(page)[0] == HOSTILE
    assert answer.inner_text() == live_answer
    # Restored through the same renderer: Markdown rendered, the stored <img onerror> still text.
    assert answer.locator("strong").inner_text() == "bold"
    assert answer.locator("img, script").count() == 0
    assert '<img src=x onerror="window.pwned=1">' in answer.inner_text()
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert "tokens" in page.get_by_test_id("pg-usage").inner_text()
    assert page.get_by_label("Max tokens").input_value() == "64"
    assert page.get_by_label("System prompt").input_value() == "Be brief."
    assert page.locator("#pg-model").input_value() == "switchyard/sim-1"
    _open_recent(page)
    assert _recent_titles(page) == [HOSTILE[:59] + "…" if len(HOSTILE) > 60 else HOSTILE]

    # Compare: a new conversation (the single one stays in the list), restored with its columns.
    page.get_by_label("Compare with other models").check()
    page.get_by_label("Model 2").select_option("switchyard/sim-mini")
    assert page.locator(".pg-msg").count() == 0
    _answer(page, "compare these", answers=2)
    page.reload()
    page.locator("[data-pg-column]").nth(1).locator(".pg-assistant").wait_for()
    assert page.get_by_label("Compare with other models").is_checked()
    assert page.get_by_label("Model 2").input_value() == "switchyard/sim-mini"
    assert page.locator("[data-pg-column]").count() == 2
    for column in (0, 1):
        texts = _messages(page, column)
        assert texts[0] == "compare these" and "You said: compare these" in texts[1]
    _open_recent(page)
    assert _recent_titles(page) == ["compare these", HOSTILE]

    # Back to the first one: single mode, its messages.
    page.locator(".pg-recent-open", has_text="bold").click()
    assert not page.get_by_label("Compare with other models").is_checked()
    assert page.locator("[data-pg-column]").count() == 1
    assert _messages(page)[0] == HOSTILE

    stored = page.evaluate("JSON.stringify(Object.assign({}, localStorage))")
    secret = page.evaluate(SECRET)
    assert secret and secret not in stored and "sk-" not in stored
    assert not errors
    context.close()


def _second_org(seeded: Seeded) -> tuple[str, int]:  # noqa: F811
    from accounts.models import Membership, Role, User
    from tests.factories import make_org

    owner = User.objects.get(email="olivia.owner@example.com")
    other = make_org(slug="other-co", credits="5")
    Membership.objects.create(user=owner, organization=other, role=Role.OWNER)
    member = User.objects.get(email="mark.member@example.com")
    return session_cookie(member), other.pk


def test_another_organisation_or_user_in_the_same_browser_sees_none_of_it(live, seeded, browser):  # noqa: F811
    from django.conf import settings

    member_cookie, other_org = orm(_second_org, seeded)
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP)
    page = context.new_page()
    page.goto(live.url + PLAYGROUND)
    _answer(page, "acme secret plans")
    acme_store = _store(page)

    with page.expect_navigation():
        page.locator("#org-select").select_option(str(other_org))
    page.wait_for_load_state("load")
    assert _store(page) != acme_store
    assert page.locator(".pg-msg").count() == 0
    assert page.locator("[data-pg-recent-count]").inner_text() == "0"
    _answer(page, "other co question")

    with page.expect_navigation():
        page.locator("#org-select").select_option(str(seeded.org_id))
    page.wait_for_load_state("load")
    assert _messages(page)[0] == "acme secret plans"
    _open_recent(page)
    assert _recent_titles(page) == ["acme secret plans"]

    # Another person signs in on this browser (same context, same localStorage): nothing of Olivia's.
    context.clear_cookies()
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": member_cookie, "url": live.url}])
    page.goto(live.url + PLAYGROUND)
    assert _store(page) != acme_store
    assert page.locator(".pg-msg").count() == 0
    assert page.locator("[data-pg-recent-count]").inner_text() == "0"
    assert "acme secret plans" not in page.content()
    context.close()


def test_new_chat_clears_and_recent_conversations_switch_and_are_removable(live, seeded, browser):  # noqa: F811
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP)
    page = context.new_page()
    page.goto(live.url + PLAYGROUND)
    _answer(page, "first question")
    page.get_by_role("button", name="New chat").click()
    assert page.locator(".pg-msg").count() == 0
    assert page.get_by_text("Say hello.").is_visible()
    page.reload()
    assert page.locator(".pg-msg").count() == 0  # the new, empty chat is the current one
    _open_recent(page)
    assert _recent_titles(page) == ["first question"]
    _answer(page, "second question")
    assert _recent_titles(page) == ["second question", "first question"]
    assert page.locator(".pg-recent-open[aria-current=true]").inner_text().startswith("second question")

    page.locator(".pg-recent-open", has_text="first question").click()
    assert _messages(page)[0] == "first question"
    assert len(_messages(page)) == 2
    page.get_by_role("button", name="Remove conversation: first question").click()
    assert _recent_titles(page) == ["second question"]
    assert page.locator(".pg-msg").count() == 0  # the removed one was on screen
    page.reload()
    _open_recent(page)
    assert _recent_titles(page) == ["second question"]
    assert "first question" not in page.evaluate(f"localStorage.getItem({json.dumps(_store(page))})")
    context.close()


def _conversation(i: int, content: str) -> dict[str, Any]:
    return {
        "id": f"c{i}",
        "title": f"stored {i}",
        "updated": 1_700_000_000_000 + i,
        "compare": False,
        "models": ["switchyard/sim-1"],
        "settings": {"temperature": "0.5", "maxTokens": "100", "system": ""},
        "threads": [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": content}]],
    }


def test_malformed_full_and_blocked_storage_do_not_break_the_page(live, seeded, browser):  # noqa: F811
    context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP)
    page = context.new_page()
    errors = _errors(page)
    page.goto(live.url + PLAYGROUND)
    key = json.dumps(_store(page))
    garbage = [
        "{not json",
        "null",
        "[1, 2]",
        '{"current": 5, "conversations": "x"}',
        json.dumps({"current": "a", "conversations": [None, 3, {"id": "a", "threads": "no"}]}),
        json.dumps(
            {
                "current": "a",
                "conversations": [
                    {
                        "id": "a",
                        "models": [7, None],
                        "settings": [],
                        "threads": [[{"role": "system", "content": "x"}, {"role": "user", "content": 5}]],
                    }
                ],
            }
        ),
    ]
    for raw in garbage:
        page.evaluate(f"localStorage.setItem({key}, {json.dumps(raw)})")
        page.reload()
        assert page.locator(".pg-msg").count() == 0, raw
        assert page.get_by_role("button", name="Send").is_enabled()
    _answer(page, "after garbage")
    assert json.loads(page.evaluate(f"localStorage.getItem({key})"))["conversations"][0]["title"] == (
        "after garbage"
    )

    # Tampered storage: an answer with HTML in it is rendered as text, never run.
    hostile = _conversation(1, '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>')
    page.evaluate(
        f"localStorage.setItem({key}, {json.dumps(json.dumps({'current': 'c1', 'conversations': [hostile]}))})"
    )
    page.reload()
    answer = page.locator(".pg-assistant .pg-text").last
    assert answer.locator("img, script").count() == 0 and "onerror" in answer.inner_text()
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.get_by_label("Max tokens").input_value() == "100"

    # Bounded: 15 stored conversations of 60 kB each are cut to fit (oldest dropped) on the next save.
    many = [_conversation(i, "x" * 60_000) for i in range(15)]
    page.evaluate(
        f"localStorage.setItem({key}, {json.dumps(json.dumps({'current': 'c0', 'conversations': many}))})"
    )
    page.reload()
    _answer(page, "one more")
    kept = json.loads(page.evaluate(f"localStorage.getItem({key})"))
    assert len(kept["conversations"]) <= 10
    assert kept["conversations"][0]["threads"][0][0]["content"] == "q0"
    assert [c["id"] for c in kept["conversations"][1:]] == [
        f"c{i}" for i in range(1, len(kept["conversations"]))
    ]
    assert len(json.dumps(kept)) <= 400_000
    assert not errors
    context.close()

    # Full storage (every write throws) and blocked storage (reading localStorage throws).
    for script in (
        "Storage.prototype.setItem = function () { throw new DOMException('full', 'QuotaExceededError'); };",
        "Object.defineProperty(window, 'localStorage', {get() { throw new DOMException('no', 'SecurityError'); }});",
    ):
        context = open_as(browser, live.url, seeded.owner_cookie, DESKTOP)
        context.add_init_script(script)
        page = context.new_page()
        errors = _errors(page)
        page.goto(live.url + PLAYGROUND)
        _answer(page, "still works")
        assert "You said: still works" in _messages(page)[1]
        page.get_by_role("button", name="New chat").click()
        assert page.locator(".pg-msg").count() == 0
        _open_recent(page)
        assert (
            "does not let the playground keep conversations" in page.locator("[data-pg-recent]").inner_text()
        )
        assert not errors, (script, errors)
        context.close()


def _restored_with_recent_open(page: Any) -> None:
    _answer(page, "**Hello** `code` and a [link](https://example.com)")
    page.reload()
    page.locator(".pg-assistant").wait_for()
    _open_recent(page)


def test_restored_playground_is_accessible_and_fits_phones(live, seeded, browser, axe):  # noqa: F811
    check_everywhere(browser, live, seeded.owner_cookie, PLAYGROUND, axe, ready=_restored_with_recent_open)
