"""End to end through a real uvicorn server with the official openai SDK, against the simulated provider."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import openai
import pytest

from routing.models import Generation
from switchyard.money import from_units
from tests.conftest import flush_usage
from tests.factories import make_key, make_org

pytestmark = pytest.mark.django_db(transaction=True)

# sim_catalog prices: $0.10 / $0.40 per million tokens.
PROMPT = Decimal("0.10") / 1_000_000
COMPLETION = Decimal("0.40") / 1_000_000


@pytest.fixture
def client(live, sim_catalog):
    org = make_org(credits="5")
    _, secret = make_key(org)
    c = openai.OpenAI(base_url=live.api, api_key=secret, max_retries=0)
    c.org = org
    return c


def test_chat_completion_bills_exactly(client):
    resp = client.chat.completions.create(
        model="switchyard/sim-1", messages=[{"role": "user", "content": "hi"}]
    )
    assert resp.id.startswith("gen-")
    assert resp.model == "switchyard/sim-1"
    assert "simulated" in resp.choices[0].message.content
    usage = resp.usage
    expected = usage.prompt_tokens * PROMPT + usage.completion_tokens * COMPLETION
    assert Decimal(str(usage.model_extra["cost"])) == expected
    flush_usage()
    gen = Generation.objects.get(pk=resp.id)
    assert from_units(gen.cost_units) == expected
    assert gen.status == "success" and gen.provider == "simulated" and not gen.streamed
    client.org.refresh_from_db()
    assert from_units(client.org.balance_units) == Decimal(5) - expected


def test_streaming_with_usage(client):
    stream = client.chat.completions.create(
        model="switchyard/sim-1",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "simulated model" in text
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert len({c.id for c in chunks}) == 1
    flush_usage()
    gen = Generation.objects.get(pk=chunks[0].id)
    assert gen.streamed and gen.tokens_completion == chunks[-1].usage.completion_tokens


def test_tool_call_round_trip(client):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    resp = client.chat.completions.create(
        model="switchyard/sim-1", messages=[{"role": "user", "content": "weather?"}], tools=tools
    )
    call = resp.choices[0].message.tool_calls[0]
    assert resp.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "example"}


def test_errors_have_the_documented_shape(client, live):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nobody/nothing", messages=[{"role": "user", "content": "x"}])
    assert err.value.body["code"] == 404 if "code" in err.value.body else True
    r = httpx.post(
        f"{live.api}/chat/completions",
        json={"model": "switchyard/sim-1"},
        headers={"Authorization": f"Bearer {client.api_key}"},
    )
    assert (
        r.status_code == 400
        and r.json()["error"]["code"] == 400
        and "messages" in r.json()["error"]["message"]
    )
    r = httpx.post(f"{live.api}/chat/completions", json={}, headers={"Authorization": "Bearer sk-sy-v1-nope"})
    assert r.status_code == 401 and r.json() == {"error": {"code": 401, "message": "Invalid API key."}}


def test_insufficient_credits_is_402(live, sim_catalog):
    org = make_org(credits="0.000001")
    _, secret = make_key(org)
    c = openai.OpenAI(base_url=live.api, api_key=secret, max_retries=0)
    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.create(model="switchyard/sim-1", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 402


def test_key_credit_limit_is_enforced(live, sim_catalog):
    """A key with a limit is refused with 402 once its limit cannot cover a request's worst case."""
    org = make_org(credits="5")
    # Worst case for this request at sim-1 prices is well under $0.0001; three fit, not thirty.
    _, secret = make_key(org, limit_usd=Decimal("0.0001"))
    c = openai.OpenAI(base_url=live.api, api_key=secret, max_retries=0)
    outcomes = []
    for _ in range(30):
        try:
            c.chat.completions.create(
                model="switchyard/sim-1", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            )
            outcomes.append(200)
        except openai.APIStatusError as exc:
            outcomes.append(exc.status_code)
            assert "limit" in exc.message
        flush_usage()
    assert 200 in outcomes and 402 in outcomes
    first_refusal = outcomes.index(402)
    assert all(o == 402 for o in outcomes[first_refusal:])
    spent = -sum(e.amount_units for e in org.ledger.filter(kind="usage"))
    assert 0 < spent <= 100_000_000  # never past the $0.0001 limit (in picodollars)
