"""Every /api/ route, called with another organisation's key: 404 for the insider's objects (answered
exactly as for objects that do not exist), only the caller's own organisation in everything else, and
the public routes answer everyone alike.

The cases are keyed by route and checked against the URLconf and the gateway's routes: a new /api/
endpoint without a case fails `test_every_api_route_has_a_case`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from routing.gateway.app import ROUTES
from routing.models import Generation
from switchyard.money import to_units
from tests.conftest import flush_usage
from tests.factories import make_key, make_org

HELLO = [{"role": "user", "content": "hello"}]


class Orgs:
    def __init__(self, live: Any) -> None:
        self.live = live
        self.insider = make_org(slug="insider", credits="10")
        self.insider_key, self.insider_secret = make_key(self.insider, name="insider-label")
        self.outsider = make_org(slug="outsider", credits="3")
        self.outsider_key, self.outsider_secret = make_key(self.outsider, name="outsider-label")
        self.generation = Generation.objects.create(
            id="gen-insider-0001",
            organization=self.insider,
            api_key=self.insider_key,
            model="switchyard/sim-1",
            provider="simulated",
            status="success",
            tokens_prompt=3,
            tokens_completion=4,
            cost_units=to_units("0.000123"),
            created_at=timezone.now(),
        )

    def call(self, method: str, path: str, secret: str | None, **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        return httpx.request(method, f"{self.live.url}{path}", headers=headers, timeout=30, **kwargs)


@pytest.fixture
def orgs(live, security_catalog) -> Orgs:
    return Orgs(live)


def _public(method: str, path: str) -> Callable[[Orgs], None]:
    def check(o: Orgs) -> None:
        answers = [o.call(method, path, s) for s in (o.insider_secret, o.outsider_secret, None)]
        assert answers[0].status_code == 200
        assert answers[0].content == answers[1].content == answers[2].content, path

    return check


def _generation(o: Orgs) -> None:
    mine = o.call("GET", "/api/v1/generation?id=gen-insider-0001", o.insider_secret)
    assert mine.status_code == 200 and mine.json()["data"]["id"] == "gen-insider-0001"
    theirs = o.call("GET", "/api/v1/generation?id=gen-insider-0001", o.outsider_secret)
    nobody = o.call("GET", "/api/v1/generation?id=gen-nobody-00001", o.outsider_secret)
    assert theirs.status_code == nobody.status_code == 404
    assert theirs.text.replace("gen-insider-0001", "ID") == nobody.text.replace("gen-nobody-00001", "ID")


def _key(o: Orgs) -> None:
    body = o.call("GET", "/api/v1/key", o.outsider_secret).json()["data"]
    assert body["label"].startswith("outsider-label")
    assert o.call("GET", "/api/v1/key", None).status_code == 401


def _credits(o: Orgs) -> None:
    outsider = o.call("GET", "/api/v1/credits", o.outsider_secret).json()["data"]
    insider = o.call("GET", "/api/v1/credits", o.insider_secret).json()["data"]
    assert outsider["total_credits"] == 3 and insider["total_credits"] == 10


def _stripe_webhook(o: Orgs) -> None:
    """Not key-authenticated (Stripe signs it): a key changes nothing and unlocks nothing."""
    answers = [
        o.call("POST", "/api/v1/stripe/webhook", s, content=b"{}", headers={"Stripe-Signature": "t=1,v1=x"})
        for s in (o.insider_secret, None)
    ]
    assert answers[0].status_code == answers[1].status_code and answers[0].status_code in (400, 503)
    assert answers[0].json() == answers[1].json()


def _gateway(path: str, body: dict[str, Any]) -> Callable[[Orgs], None]:
    def check(o: Orgs) -> None:
        before = o.call("GET", "/api/v1/credits", o.insider_secret).json()["data"]
        answer = o.call("POST", path, o.outsider_secret, json=body)
        assert answer.status_code == 200, answer.text
        gen_id = answer.headers["x-generation-id"]
        deadline = time.monotonic() + 10
        while not Generation.objects.filter(pk=gen_id).exists() and time.monotonic() < deadline:
            flush_usage()
            time.sleep(0.05)
        gen = Generation.objects.get(pk=gen_id)
        assert gen.organization_id == o.outsider.pk and gen.api_key_id == o.outsider_key.pk
        # The insider can neither read it nor paid for it.
        assert o.call("GET", f"/api/v1/generation?id={gen_id}", o.insider_secret).status_code == 404
        assert o.call("GET", "/api/v1/credits", o.insider_secret).json()["data"] == before
        assert o.call("GET", f"/api/v1/generation?id={gen_id}", o.outsider_secret).status_code == 200

    return check


CASES: dict[str, Callable[[Orgs], None]] = {
    "/api/v1/models": _public("GET", "/api/v1/models"),
    "/api/v1/models/<str:author>/<str:slug>/endpoints": _public(
        "GET", "/api/v1/models/switchyard/sim-1/endpoints"
    ),
    "/api/v1/generation": _generation,
    "/api/v1/key": _key,
    "/api/v1/credits": _credits,
    "/api/v1/stripe/webhook": _stripe_webhook,
    "/api/v1/openapi.json": _public("GET", "/api/v1/openapi.json"),
    "/api/docs/": _public("GET", "/api/docs/"),
    "/api/v1/chat/completions": _gateway(
        "/api/v1/chat/completions", {"model": "switchyard/sim-1", "messages": HELLO, "max_tokens": 8}
    ),
    "/api/v1/completions": _gateway(
        "/api/v1/completions", {"model": "switchyard/sim-1", "prompt": "hi", "max_tokens": 8}
    ),
    "/api/v1/messages": _gateway(
        "/api/v1/messages", {"model": "switchyard/sim-1", "messages": HELLO, "max_tokens": 8}
    ),
    "/api/v1/embeddings": _gateway("/api/v1/embeddings", {"model": "switchyard/sim-embed", "input": "hello"}),
}


def _api_routes() -> set[str]:
    routes: set[str] = set(ROUTES)

    def walk(patterns: list[Any], prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                route = prefix + str(p.pattern)
                if route.startswith("api/"):
                    routes.add("/" + route)

    walk(get_resolver().url_patterns, "")
    return routes


def test_every_api_route_has_a_case():
    missing = _api_routes() - set(CASES)
    assert not missing, f"add isolation cases for these /api/ routes: {sorted(missing)}"


@pytest.mark.parametrize("route", sorted(CASES))
def test_other_organisations_key_learns_nothing(route, orgs):
    CASES[route](orgs)
