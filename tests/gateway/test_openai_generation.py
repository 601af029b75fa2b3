"""Generation records: settled before the response's last byte (no race with a client that reads its
record straight after), readable through GET /api/v1/generation, and scoped to the organisation."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from routing.models import Generation
from tests.conftest import flush_usage
from tests.factories import make_key, make_org
from tests.gateway.openai_env import *  # noqa: F403 - the shared fixtures
from tests.gateway.openai_env import (
    HELLO,
    body,
    expected_cost,
    generation,
    open_holds,
    route,
    slow_settlements,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_settled_before_the_last_byte(raw, org, stream, monkeypatch):
    """The hold is settled and the usage event queued before [DONE] / the body go out: draining the
    queue right after the response ends finds the event. Handing the settlement over is made slow
    here, so an answer sent before it would be read before it, every time."""
    slow_settlements(monkeypatch)
    for _ in range(3):
        resp = raw.post("/chat/completions", json=body("fake-a", stream=stream))
        assert resp.status_code == 200
        flush_usage()  # no polling: whatever was queued before the reply ended is now in the database
        gen_id = resp.headers["x-generation-id"]
        assert Generation.objects.filter(pk=gen_id, status="success").exists()
        assert open_holds(org.pk) == 0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_generation_record_fields(client, live, secret, upstreams, stream):
    upstreams.b.push("fail_503")
    result = client.chat.completions.create(
        model="test/gpt",
        messages=HELLO,
        stream=stream,
        stream_options={"include_usage": True} if stream else None,
        extra_body=route("fake-b", "fake-a"),
    )
    if stream:
        chunks = list(result)
        gen_id, usage = chunks[0].id, chunks[-1].usage
    else:
        gen_id, usage = result.id, result.usage
    record = generation(live, secret, gen_id)
    assert record["id"] == gen_id and record["model"] == "test/gpt"
    assert record["provider_name"] == "fake-a" and record["status"] == "success"
    assert record["streamed"] is stream and record["cancelled"] is False
    assert record["finish_reason"] == "stop"
    assert (record["tokens_prompt"], record["tokens_completion"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    cost = expected_cost("fake-a", usage.prompt_tokens, usage.completion_tokens)
    assert Decimal(str(record["total_cost"])) == cost == Decimal(str(usage.model_extra["cost"]))
    assert record["latency"] >= 0 and record["time_to_first_token"] is not None
    assert [(a["provider"], a["status"]) for a in record["attempts"]] == [("fake-b", 502), ("fake-a", 200)]
    assert all(isinstance(a["latency_ms"], int) for a in record["attempts"])


def test_generation_of_another_organisation_is_404(client, live, secret):
    resp = client.chat.completions.create(model="test/gpt", messages=HELLO, extra_body=route("fake-a"))
    generation(live, secret, resp.id)
    outsider = make_key(make_org(credits="1"))[1]
    other = httpx.get(
        f"{live.api}/generation", params={"id": resp.id}, headers={"Authorization": f"Bearer {outsider}"}
    )
    assert other.status_code == 404 and other.json()["error"]["code"] == 404
