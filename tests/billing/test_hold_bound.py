"""The hold is an upper bound of what settlement can charge, at every front door.

A hostile but paying customer with $0.05 sends 8 concurrent requests whose prompt hides its bulk
where a careless hold does not look (a 400 KB tool description or response schema, a /messages PDF,
tools or system blocks), to endpoints priced $10 per million prompt tokens, against fake upstreams that
bill the whole body as a real provider does. The balance never goes below zero, the total charged
never exceeds what the organisation had, a request its balance cannot cover gets 402, and no request
costs more than its hold (no excess recorded). When a provider reports more than the hold anyway,
settlement charges the hold and the excess is the platform's loss, which the auditor reports while the
books still balance.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.test import Client

from accounts.models import Organization, User
from billing.audit import books_audit_run
from billing.models import EntryKind, LedgerEntry
from billing.selectors import ledger_balance_units
from routing.models import Generation
from switchyard.money import from_units, to_units
from switchyard.shared import redis_enabled
from tests.billing.test_holds import AvailSampler
from tests.conftest import flush_usage
from tests.factories import make_key, make_org
from tests.fakes.anthropic_upstream import FakeAnthropicUpstream
from tests.fakes.anthropic_upstream import Script as AScript
from tests.fakes.openai_upstream import Behaviour, FakeOpenAIUpstream

pytestmark = pytest.mark.django_db(transaction=True)

CATALOG = Path(__file__).parent / "data" / "hold_bound_catalog.yaml"
BALANCE = Decimal("0.05")
CONCURRENCY = 8
BIG = 400 * 1024
# Words a real tokenizer splits into about one token each: the fakes bill ~BIG/6 tokens, $0.68 a request.
FILLER = ("lorem " * (BIG // 6 + 1))[:BIG]
HELLO = [{"role": "user", "content": "Hi"}]


def _pdf(pages: int) -> str:
    """A minimal PDF with `pages` pages, base64: a few KB that a provider bills per page."""
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>"]
    objects += ["<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"] * pages
    body = "%PDF-1.4\n" + "".join(f"{n + 1} 0 obj\n{o}\nendobj\n" for n, o in enumerate(objects))
    return base64.b64encode((body + "trailer\n<< /Root 1 0 R >>\n%%EOF\n").encode()).decode()


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Any]]:
    servers: dict[str, Any] = {
        "openai": FakeOpenAIUpstream().start(),
        "anthropic": FakeAnthropicUpstream().start(),
    }
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def bound_catalog(fakes, transactional_db, tmp_path, monkeypatch):
    from routing.catalog.loader import catalog_load
    from routing.catalog.snapshot import catalog
    from routing.health import book

    monkeypatch.setenv("SY_TEST_BOUND_OPENAI_KEY", "sk-bound-openai")
    monkeypatch.setenv("SY_TEST_BOUND_ANTHROPIC_KEY", fakes["anthropic"].api_key)
    text = CATALOG.read_text()
    for name, server in fakes.items():
        text = text.replace(f"__{name.upper()}__", server.base_url)
        server.reset()
    # Bill the whole body (tools and schemas are prompt tokens), as a real provider does.
    fakes["openai"].set_default(Behaviour(usage="body"))
    path = tmp_path / "bound.yaml"
    path.write_text(text)
    catalog_load([path])
    catalog.clear()
    book.reset()
    yield
    book.reset()
    for server in fakes.values():
        server.reset()


def _burst(
    url: str, path: str, secret: str, body: dict[str, Any], n: int = CONCURRENCY
) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            headers = {"Authorization": f"Bearer {secret}"}
            return await asyncio.gather(
                *(client.post(url + path, json=body, headers=headers) for _ in range(n))
            )

    return asyncio.run(run())


def _charged(org: Organization) -> int:
    entries = LedgerEntry.objects.filter(organization=org, kind=EntryKind.USAGE)
    return -sum(entries.values_list("amount_units", flat=True))


def _assert_never_overspent(org: Organization, had: int) -> None:
    flush_usage()
    balance = Organization.objects.values_list("balance_units", flat=True).get(pk=org.pk)
    assert balance >= 0
    assert balance == ledger_balance_units(organization_id=org.pk)
    assert _charged(org) <= had
    report = books_audit_run(mirror_settle_seconds=0.2)
    assert report.findings == []


def _tool(description: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": description,
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }


def _schema(description: str) -> dict[str, Any]:
    schema = {"type": "object", "description": description, "properties": {"a": {"type": "string"}}}
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


# The front door, the body, and what the Anthropic fake bills (None: the OpenAI fake answers).
CASES = {
    "chat-tool-description": (
        "/chat/completions",
        {"model": "bound/gpt", "max_tokens": 1, "messages": HELLO, "tools": [_tool(FILLER)]},
    ),
    "chat-response-schema": (
        "/chat/completions",
        {"model": "bound/gpt", "max_tokens": 1, "messages": HELLO, "response_format": _schema(FILLER)},
    ),
    "chat-stop-and-stream": (
        "/chat/completions",
        {
            "model": "bound/gpt",
            "max_tokens": 1,
            "stream": True,
            "messages": HELLO,
            "tools": [_tool(FILLER)],
            "stop": ["END"],
        },
    ),
    "messages-tools": (
        "/messages",
        {
            "model": "bound/claude",
            "max_tokens": 1,
            "messages": HELLO,
            "tools": [{"name": "lookup", "description": FILLER, "input_schema": {"type": "object"}}],
        },
    ),
    "messages-system-blocks": (
        "/messages",
        {
            "model": "bound/claude",
            "max_tokens": 1,
            "system": [
                {"type": "text", "text": FILLER[: BIG // 2]},
                {"type": "text", "text": FILLER[: BIG // 2]},
            ],
            "messages": HELLO,
        },
    ),
    "messages-text-document": (
        "/messages",
        {
            "model": "bound/claude",
            "max_tokens": 1,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "Short."},
                            "title": "Notes",
                            "context": FILLER,
                        },
                        {"type": "text", "text": "Summarise."},
                    ],
                }
            ],
        },
    ),
    "messages-pdf-document": (
        "/messages",
        {
            "model": "bound/claude",
            "max_tokens": 1,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {"type": "base64", "media_type": "application/pdf", "data": _pdf(60)},
                        },
                        {"type": "text", "text": "Summarise."},
                    ],
                }
            ],
        },
    ),
    "completions-prompt": ("/completions", {"model": "bound/gpt", "max_tokens": 1, "prompt": FILLER}),
    # Within the 8192-token context (the router's estimate), still ~$0.24 of worst case.
    "embeddings-input": ("/embeddings", {"model": "bound/embed", "input": [FILLER[:3_000]] * 8}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_hidden_prompt_cannot_overspend(live, bound_catalog, fakes, case):
    """Every request's worst case is far beyond $0.05 (~$0.68 billed each by the provider), so the
    hold refuses all eight with 402: nothing is charged, nothing reaches the provider."""
    path, body = CASES[case]
    if path == "/messages":
        fakes["anthropic"].push(*[AScript(bill_whole_body=True)] * CONCURRENCY)
    org = make_org(credits=BALANCE)
    _, secret = make_key(org)
    with AvailSampler(org.pk) as sampler:
        replies = _burst(live.api, path, secret, body)
    statuses = [r.status_code for r in replies]
    assert statuses == [402] * CONCURRENCY, (
        statuses,
        [r.text[:300] for r in replies if r.status_code != 402],
    )
    if path == "/messages":
        assert all(r.json()["error"]["type"] == "billing_error" for r in replies)
    else:
        assert all(r.json()["error"]["code"] == 402 for r in replies)
    if redis_enabled():
        assert sampler.lowest is not None and sampler.lowest >= 0
    _assert_never_overspent(org, to_units(BALANCE))
    assert _charged(org) == 0


SIZED = 1_500  # bytes of tool description: a hold of ~$0.016, so a few fit in $0.05 at once


def test_what_the_balance_covers_runs_and_the_rest_gets_402(live, bound_catalog, fakes):
    """A prompt whose bound fits the balance a few times: the requests that run are charged what the
    provider billed, never more than their hold, and the total never exceeds the balance."""
    body = {"model": "bound/gpt", "max_tokens": 1, "messages": HELLO, "tools": [_tool(FILLER[:SIZED])]}
    org = make_org(credits=BALANCE)
    _, secret = make_key(org)
    with AvailSampler(org.pk) as sampler:
        replies = _burst(live.api, "/chat/completions", secret, body, n=3 * CONCURRENCY)
    statuses = [r.status_code for r in replies]
    assert set(statuses) <= {200, 402}, statuses
    assert 200 in statuses and 402 in statuses, statuses
    if redis_enabled():
        assert sampler.lowest is not None and sampler.lowest >= 0
    _assert_never_overspent(org, to_units(BALANCE))
    gens = Generation.objects.filter(organization=org, status="success")
    assert gens.count() == statuses.count(200)
    # The provider billed the tool (~250 words), and no request cost more than its hold.
    assert all(g.tokens_prompt > SIZED // 8 for g in gens)
    assert all(g.uncharged_units == 0 for g in gens)
    costs = {r.headers["x-generation-id"]: r.json()["usage"]["cost"] for r in replies if r.status_code == 200}
    for g in gens:
        assert Decimal(str(costs[g.pk])) == from_units(g.cost_units)


def test_a_provider_reporting_more_than_the_hold_is_charged_the_hold(live, bound_catalog, fakes, capsys):
    """The provider claims ten million prompt tokens ($100) for a two-word prompt: each request is
    charged at most its hold, the balance never goes negative, the excess is recorded on the generation
    (the platform's loss) and the auditor reports it while the books balance."""
    lying = Behaviour(usage={"prompt_tokens": 10_000_000, "completion_tokens": 1, "total_tokens": 10_000_001})
    fakes["openai"].set_default(lying)
    fakes["anthropic"].push(*[AScript(input_tokens=10_000_000)] * CONCURRENCY)
    org = make_org(credits=BALANCE)
    _, secret = make_key(org)
    body = {"model": "bound/gpt", "max_tokens": 1, "messages": HELLO}
    claude = {"model": "bound/claude", "max_tokens": 1, "messages": HELLO}
    with AvailSampler(org.pk) as sampler:
        replies = _burst(live.api, "/chat/completions", secret, body)
        replies += _burst(live.api, "/messages", secret, claude)
        replies += _burst(live.api, "/embeddings", secret, {"model": "bound/embed", "input": "Hi"})
    assert {r.status_code for r in replies} == {200}, [r.text[:300] for r in replies]
    if redis_enabled():
        assert sampler.lowest is not None and sampler.lowest >= 0
    _assert_never_overspent(org, to_units(BALANCE))
    gens = list(Generation.objects.filter(organization=org))
    assert len(gens) == 3 * CONCURRENCY
    list_cost = 10_000_000 * to_units("10") // 1_000_000
    for g in gens:
        assert 0 < g.cost_units < to_units("0.01")  # a hold's worth, not $100
        assert g.cost_units + g.uncharged_units >= list_cost
        assert LedgerEntry.objects.get(kind=EntryKind.USAGE, source=g.pk).amount_units == -g.cost_units
    by_gen = {g.pk: g for g in gens}
    for r in replies:
        usage = r.json()["usage"]
        assert Decimal(str(usage["cost"])) == from_units(by_gen[r.headers["x-generation-id"]].cost_units)
    report = books_audit_run(mirror_settle_seconds=0.2)
    assert report.clean
    assert report.uncharged_generations == len(gens)
    assert report.uncharged_units == sum(g.uncharged_units for g in gens)
    call_command("audit_books")
    out = capsys.readouterr().out
    assert f"uncharged_units: {from_units(report.uncharged_units).normalize():f} USD" in out
    assert out.strip().endswith("books balance")
    # Visible in Django admin: the generations with an excess, filtered, with the amount not charged.
    admin = Client()
    admin.force_login(User.objects.create_superuser(email="auditor@example.com", password="pw-for-tests-1"))
    page = admin.get("/admin/routing/generation/", {"uncharged": "yes"})
    assert page.status_code == 200
    assert f"{len(gens)} generations" in page.content.decode()
    detail = admin.get(f"/admin/routing/generation/{gens[0].pk}/change/").content.decode()
    assert f"{from_units(gens[0].uncharged_units).normalize():f}" in detail


def test_media_are_held_by_their_own_worst_case_not_their_bytes(live, bound_catalog, fakes):
    """A 300 KB base64 image is held as one image (2,000 tokens, $0.02), not as 300 KB of text, so
    $0.05 covers it; an audio part, whose tokens its bytes do not bound, holds the endpoint's whole
    context ($1.28 at 128k tokens) and is refused."""
    image = "data:image/png;base64," + base64.b64encode(bytes(225_000)).decode()
    org = make_org(credits=BALANCE)
    _, secret = make_key(org)
    parts = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": image}}]
    body = {"model": "bound/gpt", "max_tokens": 1, "messages": [{"role": "user", "content": parts}]}
    [reply] = _burst(live.api, "/chat/completions", secret, body, n=1)
    assert reply.status_code == 200, reply.text[:300]
    audio = {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(b"RIFF").decode(), "format": "wav"},
    }
    body["messages"] = [{"role": "user", "content": [parts[0], audio]}]
    [reply] = _burst(live.api, "/chat/completions", secret, body, n=1)
    assert reply.status_code == 402, reply.text[:300]
    assert Decimal(reply.json()["error"]["metadata"]["required"]) > Decimal("1.28")
    _assert_never_overspent(org, to_units(BALANCE))
