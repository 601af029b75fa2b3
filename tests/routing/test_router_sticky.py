"""Sticky routing for prompt caching, through the live server: an organisation's repeated requests to a
model with the same opening go to the endpoint that answered before, while it is healthy; when it
fails, the request fails over and the new endpoint becomes the sticky one."""

from __future__ import annotations

import pytest

from routing.request import opening_of
from routing.router import sticky_key
from tests.routing.route_env import *  # noqa: F403 - the shared fixtures
from tests.routing.route_env import generation, hits

pytestmark = pytest.mark.django_db(transaction=True)

SYSTEM = "You are a careful assistant for the switchyard routing tests. " * 12  # ~180 tokens
SERVERS = ("r-a", "r-b", "r-c")


def conversation(turn: int, system: str = SYSTEM) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "First question"}]
    for i in range(turn):
        messages += [
            {"role": "assistant", "content": f"Answer {i}"},
            {"role": "user", "content": f"Follow-up {i}"},
        ]
    return messages


@pytest.fixture
def sticky_on(settings):
    settings.SWITCHYARD_STICKY_MIN_PROMPT_TOKENS = 50
    return settings


def send(client, messages, **body):
    return client.chat.completions.create(model="test/route", messages=messages, extra_body=body)


def test_same_opening_sticks_to_one_endpoint_across_turns(sticky_on, client, upstreams):
    first = send(client, conversation(0)).model_extra["provider"]
    for turn in range(1, 20):
        assert send(client, conversation(turn)).model_extra["provider"] == first
    counts = hits(upstreams)
    assert sorted(counts.values()) == [0, 0, 20], counts
    # Without stickiness 20 price-weighted picks would all land on one endpoint with probability < 0.3%.


def test_short_prompts_are_load_balanced_not_sticky(settings, client, upstreams):
    settings.SWITCHYARD_STICKY_MIN_PROMPT_TOKENS = 100_000
    for turn in range(40):
        send(client, conversation(turn % 3))
    counts = hits(upstreams)
    assert sum(1 for n in counts.values() if n) >= 2, counts  # all 40 on one endpoint: p < 1e-5


def test_explicit_order_wins_over_stickiness(sticky_on, client, upstreams):
    for _ in range(3):
        send(client, conversation(0), provider={"sort": "price"})
    # The sticky endpoint for this opening is now r-a; an explicit order still goes where it says.
    assert send(client, conversation(1), provider={"order": ["r-c"]}).model_extra["provider"] == "Route C"


def test_sticky_endpoint_that_fails_is_replaced(sticky_on, client, live, secret, upstreams):
    first = send(client, conversation(0))
    sticky = first.model_extra["provider"]
    server = dict(zip(("Route A", "Route B", "Route C"), upstreams.all(), strict=True))[sticky]
    server.push("fail_503")
    failed_over = send(client, conversation(1))
    record = generation(live.api, secret, failed_over.id)
    assert record["attempts"][0]["status"] == 502  # the sticky endpoint was tried first
    new = failed_over.model_extra["provider"]
    assert new != sticky
    # The endpoint that answered is now the sticky one.
    again = send(client, conversation(2))
    assert again.model_extra["provider"] == new
    assert [a["status"] for a in generation(live.api, secret, again.id)["attempts"]] == [200]


def test_the_key_depends_on_organisation_model_and_opening():
    req = opening_of("chat", conversation(0), None)
    later = opening_of("chat", conversation(5), None)
    other = opening_of("chat", conversation(0, system="Another system prompt"), None)
    assert sticky_key(1, "test/route", req) == sticky_key(1, "test/route", later)
    assert sticky_key(1, "test/route", req) != sticky_key(2, "test/route", req)
    assert sticky_key(1, "test/route", req) != sticky_key(1, "test/other", req)
    assert sticky_key(1, "test/route", req) != sticky_key(1, "test/route", other)
