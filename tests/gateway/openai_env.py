"""Shared set-up for the gateway-vs-fake-OpenAI tests: three fake upstreams, a catalog that serves one
model through all of them (plus a closed port), an organisation with credits, SDK clients, and helpers
to route a request and to read back its generation record and charge."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import flush_usage
from tests.factories import make_key, make_org
from tests.fakes.openai_upstream import FakeOpenAIUpstream

# The fixtures: test modules take them with `from tests.gateway.openai_env import *`.
__all__ = ["aclient", "client", "key_and_secret", "oai_catalog", "org", "raw", "secret", "upstreams"]

CATALOG = Path(__file__).resolve().parent.parent / "data" / "openai_catalog.yaml"
M = Decimal(1_000_000)
# Platform keys the fakes insist on (each fake answers 401 to anything else).
KEYS = {
    "a": "sk-platform-a-" + "A" * 32,
    "b": "sk-platform-b-" + "B" * 32,
    "c": "sk-platform-c-" + "C" * 32,
}
PRICES = {  # USD per million tokens, as in openai_catalog.yaml
    "fake-a": (Decimal("0.15"), Decimal("0.60")),
    "fake-b": (Decimal("0.20"), Decimal("0.80")),
    "fake-c": (Decimal("0.25"), Decimal("1.00")),
}
HELLO = [{"role": "user", "content": "Say hello to the switchyard"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


@dataclass
class Upstreams:
    a: FakeOpenAIUpstream
    b: FakeOpenAIUpstream
    c: FakeOpenAIUpstream
    dead_url: str

    def all(self) -> list[FakeOpenAIUpstream]:
        return [self.a, self.b, self.c]


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens here any more: connection refused


@pytest.fixture(scope="session")
def upstreams() -> Iterator[Upstreams]:
    servers = {name: FakeOpenAIUpstream(api_key=key).start() for name, key in KEYS.items()}
    yield Upstreams(servers["a"], servers["b"], servers["c"], _closed_port_url())
    for server in servers.values():
        server.stop()


@pytest.fixture
def oai_catalog(upstreams, transactional_db, tmp_path, monkeypatch):
    from routing.catalog.loader import catalog_load
    from routing.catalog.snapshot import catalog
    from routing.health import book

    for name, key in KEYS.items():
        monkeypatch.setenv(f"SY_TEST_OAI_{name.upper()}_KEY", key)
    text = CATALOG.read_text()
    for name, server in (("A", upstreams.a), ("B", upstreams.b), ("C", upstreams.c)):
        text = text.replace(f"__{name}__", server.base_url)
        server.reset()
    text = text.replace("__DEAD__", upstreams.dead_url)
    path = tmp_path / "openai.yaml"
    path.write_text(text)
    summary = catalog_load([path])
    catalog.clear()
    book.reset()  # embedded mode reuses endpoint ids across tests; no breaker state may carry over
    yield summary
    book.reset()


@pytest.fixture
def org(live, oai_catalog):
    return make_org(credits="5")


@pytest.fixture
def key_and_secret(org):
    return make_key(org)


@pytest.fixture
def secret(key_and_secret) -> str:
    return key_and_secret[1]


@pytest.fixture
def client(live, secret) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.api, api_key=secret, max_retries=0, timeout=30)


@pytest.fixture
def aclient(live, secret) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=live.api, api_key=secret, max_retries=0, timeout=30)


@pytest.fixture
def raw(live, secret) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.api, headers={"Authorization": f"Bearer {secret}"}, timeout=30) as http:
        yield http


def route(*providers: str, **extra: Any) -> dict[str, Any]:
    """extra_body that pins the order of providers to try (and nothing else)."""
    return {"provider": {"order": list(providers), "allow_fallbacks": False}, **extra}


def body(*providers: str, stream: bool = False, **fields: Any) -> dict[str, Any]:
    """A raw JSON chat request routed through exactly `providers`, in order."""
    return {"model": "test/gpt", "messages": HELLO, "stream": stream, **route(*providers), **fields}


def generation(live: Any, secret: str, gen_id: str, timeout: float = 15.0) -> dict[str, Any]:
    """GET /api/v1/generation?id=..., polling until the record has landed (Celery in full mode)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = httpx.get(
            f"{live.api}/generation",
            params={"id": gen_id},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=10,
        )
        if resp.status_code == 200:
            return resp.json()["data"]
        assert resp.status_code == 404, resp.text
        if time.monotonic() > deadline:
            raise AssertionError(f"generation {gen_id} was not recorded within {timeout}s")
        time.sleep(0.05)


def usage_entries(org: Any) -> list[Any]:
    flush_usage()
    return list(org.ledger.filter(kind="usage"))


def balance(org: Any) -> Decimal:
    from switchyard.money import from_units

    flush_usage()
    org.refresh_from_db()
    return from_units(org.balance_units)


def open_holds(org_id: int) -> int:
    """Credit still reserved for the organisation: open hold rows (embedded) or the Redis mirror (full)."""
    from switchyard.shared import redis_enabled, sync_redis

    if redis_enabled():
        held = sync_redis().hget(f"sy:o:{org_id}", "held")
        return int(held or 0)
    from billing.models import Hold, HoldStatus

    return Hold.objects.filter(organization_id=org_id, status=HoldStatus.OPEN).count()


def sse_events(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order (comments dropped)."""
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def expected_cost(provider: str, prompt: int, completion: int) -> Decimal:
    p, c = PRICES[provider]
    return (prompt * p + completion * c) / M


def slow_settlements(monkeypatch: pytest.MonkeyPatch, seconds: float = 0.2) -> None:
    """The live server hands every settlement over `seconds` late (blocking its loop, as slow work would)."""
    from routing.gateway import settlement

    handover = settlement.hold_settle_now

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return handover(*args, **kwargs)

    monkeypatch.setattr(settlement, "hold_settle_now", slow)
