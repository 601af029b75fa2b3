"""The circuit breaker through the live server: repeated failures open it (the endpoint is then skipped,
not even contacted), after the cooldown one probe goes through, a successful probe closes it and a
failed one re-opens it. The cooldown is a setting read on every decision: the tests hold it long, then
end it by setting it to zero (no sleeping, no timing assumptions). In full mode the state is in Redis."""

from __future__ import annotations

import pytest

from routing.health import book
from tests.routing.route_env import *  # noqa: F403 - the shared fixtures
from tests.routing.route_env import HELLO, endpoint_ids, generation, hits

pytestmark = pytest.mark.django_db(transaction=True)

PINNED = {"order": ["r-a", "r-b"], "sort": "price"}


@pytest.fixture
def fast_breaker(settings):
    settings.SWITCHYARD_BREAKER_THRESHOLD = 3
    settings.SWITCHYARD_BREAKER_COOLDOWN_SECONDS = 600
    settings.SWITCHYARD_BREAKER_PROBE_SECONDS = 0
    return settings


def end_cooldown(settings) -> None:
    settings.SWITCHYARD_BREAKER_COOLDOWN_SECONDS = 0


def restart_cooldown(settings) -> None:
    settings.SWITCHYARD_BREAKER_COOLDOWN_SECONDS = 600


def post(http, **provider):
    return http.post(
        "/chat/completions", json={"model": "test/route", "messages": HELLO, "provider": provider or PINNED}
    )


def circuit(live, author: str = "test", slug: str = "route") -> dict[str, str]:
    import httpx

    data = httpx.get(f"{live.api}/models/{author}/{slug}/endpoints").json()["data"]
    return {e["tag"]: e["circuit"] for e in data["endpoints"]}


def attempts(live, secret, resp) -> list[tuple[str, int]]:
    record = generation(live.api, secret, resp.headers["x-generation-id"])
    return [(a["provider"], a["status"]) for a in record["attempts"]]


def test_breaker_opens_probes_after_cooldown_and_closes_on_success(
    fast_breaker, http, live, secret, upstreams
):
    upstreams.a.set_default("fail_503")
    for _ in range(3):
        resp = post(http)
        assert resp.status_code == 200 and resp.json()["provider"] == "Route B"
        assert attempts(live, secret, resp) == [("r-a", 502), ("r-b", 200)]
    assert circuit(live)["r-a"] == "open"
    assert book.state(endpoint_ids()["r-a"]) == "open"

    # Open: r-a is not contacted at all although the request orders it first.
    before = hits(upstreams)["r-a"]
    resp = post(http)
    assert resp.status_code == 200 and attempts(live, secret, resp) == [("r-b", 200)]
    assert hits(upstreams)["r-a"] == before

    # After the cooldown: half-open, and the next request is the probe (tried first).
    end_cooldown(fast_breaker)
    assert circuit(live)["r-a"] == "half_open"
    upstreams.a.set_default("ok")
    resp = post(http)
    assert resp.status_code == 200 and attempts(live, secret, resp) == [("r-a", 200)]
    assert circuit(live)["r-a"] == "closed"
    resp = post(http)
    assert attempts(live, secret, resp) == [("r-a", 200)]


def test_a_failed_probe_reopens_for_another_cooldown(fast_breaker, http, live, secret, upstreams):
    upstreams.a.set_default("fail_500")
    for _ in range(3):
        post(http)
    assert circuit(live)["r-a"] == "open"  # (in full mode this also brings the shared view up to date)
    end_cooldown(fast_breaker)
    resp = post(http)  # the probe fails, the request still succeeds on r-b
    assert resp.status_code == 200 and attempts(live, secret, resp) == [("r-a", 502), ("r-b", 200)]
    restart_cooldown(fast_breaker)
    assert circuit(live)["r-a"] == "open"
    before = hits(upstreams)["r-a"]
    resp = post(http)
    assert attempts(live, secret, resp) == [("r-b", 200)]
    assert hits(upstreams)["r-a"] == before


def test_only_one_probe_per_interval_while_half_open(fast_breaker, http, live, secret, upstreams):
    fast_breaker.SWITCHYARD_BREAKER_PROBE_SECONDS = 600
    upstreams.a.set_default("fail_500")
    for _ in range(3):
        post(http)
    assert circuit(live)["r-a"] == "open"  # (in full mode this also brings the shared view up to date)
    end_cooldown(fast_breaker)
    first = post(http)
    second = post(http)
    assert attempts(live, secret, first)[0] == ("r-a", 502)  # the probe
    assert attempts(live, secret, second) == [("r-b", 200)]  # no second probe within the interval


def test_open_circuits_are_still_tried_when_nothing_else_is_left(fast_breaker, http, live, secret, upstreams):
    upstreams.a.set_default("fail_500")
    for _ in range(3):
        post(http)
    upstreams.a.set_default("ok")
    resp = post(http, order=["r-a"], allow_fallbacks=False)
    assert resp.status_code == 200 and attempts(live, secret, resp) == [("r-a", 200)]


def test_request_faults_do_not_count_against_the_provider(fast_breaker, http, live, upstreams):
    upstreams.a.set_default("fail_400")
    for _ in range(4):
        resp = post(http)
        assert resp.status_code == 400
    assert circuit(live)["r-a"] == "closed"
