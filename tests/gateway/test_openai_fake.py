"""The fake OpenAI upstream's additions for the gateway tests: `error_in_body` and how an exchange ended
(`outcome`), checked directly against the fake with httpx and the openai SDK."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.fakes.openai_upstream import Behaviour, FakeOpenAIUpstream

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]}
AUTH = {"Authorization": "Bearer sk-test"}


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAIUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(fake):
    fake.reset()


def test_error_in_body_whole_is_a_200_error_object(fake):
    fake.push(Behaviour(kind="error_in_body", message="melted"))
    resp = httpx.post(fake.url("/v1/chat/completions"), json=CHAT, headers=AUTH)
    assert resp.status_code == 200 and resp.json()["error"]["message"] == "melted"


def test_error_in_body_stream_sends_chunks_then_an_error_event(fake):
    fake.push(Behaviour(kind="error_in_body", content="one two three", after_chunks=2, message="melted"))
    resp = httpx.post(fake.url("/v1/chat/completions"), json={**CHAT, "stream": True}, headers=AUTH)
    events = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: ")]
    assert len(events) == 3 and events[1]["choices"][0]["delta"]["content"] == "one"
    assert events[-1]["error"]["message"] == "melted"
    client = openai.OpenAI(base_url=fake.url("/v1"), api_key="sk-test", max_retries=0)
    fake.push(Behaviour(kind="error_in_body", after_chunks=1, message="melted"))
    with pytest.raises(openai.APIError, match="melted"):
        list(client.chat.completions.create(stream=True, **CHAT))


def test_outcome_complete_and_client_closed(fake):
    httpx.post(fake.url("/v1/chat/completions"), json={**CHAT, "stream": True}, headers=AUTH)
    assert fake.last_request.outcome == "complete"

    fake.push(Behaviour(kind="ok", content="a b c d e f g h", chunk_delay_ms=200))
    with httpx.stream(
        "POST", fake.url("/v1/chat/completions"), json={**CHAT, "stream": True}, headers=AUTH
    ) as r:
        next(r.iter_lines())
    deadline = time.monotonic() + 5
    while fake.last_request.outcome is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.last_request.outcome == "client_closed"

    fake.push("hang")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(fake.url("/v1/chat/completions"), json=CHAT, headers=AUTH, timeout=0.3)
    deadline = time.monotonic() + 5
    while fake.last_request.outcome is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.last_request.outcome == "client_closed"
