"""A client that hangs up: the upstream call is cancelled at once (the fake sees its connection close),
the generation is recorded as cancelled, and exactly what was produced is charged."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import pytest

from routing.gateway.tokens import count_messages, count_text
from tests.fakes.openai_upstream import Behaviour, FakeOpenAIUpstream
from tests.gateway.openai_env import *  # noqa: F403 - the shared fixtures
from tests.gateway.openai_env import (
    HELLO,
    balance,
    body,
    expected_cost,
    generation,
    open_holds,
    usage_entries,
)

pytestmark = pytest.mark.django_db(transaction=True)
WORDS = " ".join(f"word{i}" for i in range(40))


def wait_for_outcome(fake: FakeOpenAIUpstream, timeout: float = 10.0) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = fake.last_request.outcome
        if outcome is not None:
            return outcome
        time.sleep(0.02)
    return None


def test_disconnect_mid_stream_cancels_upstream_and_charges_what_was_produced(live, secret, upstreams, org):
    upstreams.a.push(Behaviour(kind="ok", content=WORDS, chunk_delay_ms=150))
    before = balance(org)
    got: list[str] = []
    with httpx.Client(base_url=live.api, headers={"Authorization": f"Bearer {secret}"}, timeout=10) as http:
        with http.stream("POST", "/chat/completions", json=body("fake-a", stream=True)) as resp:
            gen_id = resp.headers["x-generation-id"]
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    got.append(json.loads(line[6:])["choices"][0]["delta"].get("content") or "")
                    if len(got) == 4:
                        break  # leaving the block closes the connection mid-stream
    assert wait_for_outcome(upstreams.a) == "client_closed"

    record = generation(live, secret, gen_id)
    assert record["cancelled"] is True and record["status"] == "cancelled"
    assert record["attempts"][-1]["reason"] == "cancelled"
    produced = record["tokens_completion"]
    assert count_text("".join(got)) <= produced < count_text(WORDS)
    assert record["tokens_prompt"] == count_messages(HELLO) and record["usage_estimated"] is True
    cost = expected_cost("fake-a", count_messages(HELLO), produced)
    assert Decimal(str(record["total_cost"])) == cost > 0
    assert balance(org) == before - cost
    assert open_holds(org.pk) == 0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_disconnect_before_the_first_byte_cancels_upstream_and_charges_nothing(
    live, secret, upstreams, org, stream
):
    upstreams.a.push("hang")
    before = balance(org)
    with httpx.Client(base_url=live.api, headers={"Authorization": f"Bearer {secret}"}, timeout=0.5) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post("/chat/completions", json=body("fake-a", stream=stream))
    assert wait_for_outcome(upstreams.a) == "client_closed"
    # The id was never sent; the organisation's only generation is the cancelled one.
    from routing.models import Generation

    deadline = time.monotonic() + 15
    while not Generation.objects.filter(organization=org).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    record = generation(live, secret, Generation.objects.get(organization=org).pk)
    assert record["cancelled"] is True and record["total_cost"] == 0
    assert [a["reason"] for a in record["attempts"]] == ["cancelled"]
    assert balance(org) == before and usage_entries(org) == []
    assert open_holds(org.pk) == 0
