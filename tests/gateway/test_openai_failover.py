"""Failover before the first byte, on every failure kind, through the live server and the openai SDK;
what happens when every candidate fails or none is available; provider errors that must not fail over."""

from __future__ import annotations

import json
from decimal import Decimal

import openai
import pytest

from tests.fakes.openai_upstream import Behaviour
from tests.gateway.openai_env import *  # noqa: F403 - the shared fixtures
from tests.gateway.openai_env import (
    HELLO,
    KEYS,
    balance,
    body,
    generation,
    open_holds,
    route,
    sse_events,
    usage_entries,
)

pytestmark = pytest.mark.django_db(transaction=True)

# (behaviour on fake A, provider slug that fails, expected attempt reason, its status in the record)
FAILURES = [
    pytest.param(None, "fake-dead", "connect", 502, id="connect-refused"),
    pytest.param(Behaviour(kind="hang"), "fake-tight", "timeout", 408, id="timeout-before-headers"),
    pytest.param(Behaviour(kind="hang_after_headers"), "fake-tight", "timeout", 408, id="hang-after-headers"),
    pytest.param(Behaviour(kind="status", status=408), "fake-a", "timeout", 408, id="408"),
    pytest.param(
        Behaviour(kind="status", status=429, retry_after=3), "fake-a", "rate_limited", 502, id="429"
    ),
    pytest.param(Behaviour(kind="status", status=500), "fake-a", "server_error", 502, id="500"),
    pytest.param(Behaviour(kind="status", status=502), "fake-a", "server_error", 502, id="502"),
    pytest.param(Behaviour(kind="status", status=503), "fake-a", "server_error", 502, id="503"),
    pytest.param(Behaviour(kind="malformed"), "fake-a", "malformed", 502, id="malformed-json"),
    pytest.param(Behaviour(kind="garbage"), "fake-a", "malformed", 502, id="garbage-body"),
    pytest.param(Behaviour(kind="drop"), "fake-a", "connection", 502, id="connection-dropped"),
    pytest.param(Behaviour(kind="garbage_raw"), "fake-a", "connection", 502, id="not-http"),
]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("behaviour", "bad", "reason", "status"), FAILURES)
def test_failover_before_first_byte(
    client, live, secret, upstreams, org, stream, behaviour, bad, reason, status
):
    if behaviour is not None:
        upstreams.a.push(behaviour)
    before = balance(org)
    kwargs = {"model": "test/gpt", "messages": HELLO, "extra_body": route(bad, "fake-b")}
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        gen_id = chunks[0].id
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert {c.model_extra["provider"] for c in chunks} == {"Fake B"}
        assert chunks[-1].choices[0].finish_reason == "stop"
    else:
        resp = client.chat.completions.create(**kwargs)
        gen_id = resp.id
        text = resp.choices[0].message.content
        assert resp.model_extra["provider"] == "Fake B"
    assert "Hello from fake-openai" in text
    assert upstreams.b.last_request.json["model"] == "gpt-4o-mini-b"

    record = generation(live, secret, gen_id)
    attempts = record["attempts"]
    assert [a["provider"] for a in attempts] == [bad, "fake-b"]
    assert attempts[0]["reason"] == reason and attempts[0]["status"] == status
    assert attempts[0]["error"]  # says what went wrong
    assert attempts[1]["status"] == 200 and "reason" not in attempts[1]
    assert record["provider_name"] == "fake-b" and record["status"] == "success"
    assert record["streamed"] is stream
    # Only the provider that answered is paid for.
    assert balance(org) == before - Decimal(str(record["total_cost"]))
    assert Decimal(str(record["total_cost"])) > 0


def test_failover_walks_three_providers_in_order(client, live, secret, upstreams):
    upstreams.a.push("fail_503")
    upstreams.b.push("fail_500")
    resp = client.chat.completions.create(
        model="test/gpt", messages=HELLO, extra_body=route("fake-a", "fake-b", "fake-c")
    )
    assert resp.model_extra["provider"] == "Fake C"
    record = generation(live, secret, resp.id)
    assert [(a["provider"], a["status"]) for a in record["attempts"]] == [
        ("fake-a", 502),
        ("fake-b", 502),
        ("fake-c", 200),
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_all_candidates_fail_502_names_what_was_tried_and_charges_nothing(
    live, secret, raw, upstreams, org, stream
):
    upstreams.a.push("fail_500")
    upstreams.b.push("fail_503")
    before = balance(org)
    resp = raw.post("/chat/completions", json=body("fake-a", "fake-b", "fake-dead", stream=stream))
    assert resp.status_code == 502
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert error["code"] == 502
    assert error["message"].startswith("Every provider failed. Tried 3:")
    for slug in ("fake-a", "fake-b", "fake-dead"):
        assert slug in error["message"]
    assert [a["provider"] for a in error["metadata"]["attempts"]] == ["fake-a", "fake-b", "fake-dead"]
    gen_id = resp.headers["x-generation-id"]
    record = generation(live, secret, gen_id)
    assert record["status"] == "error" and record["total_cost"] == 0
    assert [a["reason"] for a in record["attempts"]] == ["server_error", "server_error", "connect"]
    assert balance(org) == before
    assert usage_entries(org) == []
    assert open_holds(org.pk) == 0


def test_all_time_out_is_408(live, raw, upstreams, settings):
    settings.SWITCHYARD_FIRST_BYTE_TIMEOUT_SECONDS = Decimal("0.5")  # the deployment-wide cap
    upstreams.a.set_default("hang")
    upstreams.b.set_default("hang")
    resp = raw.post("/chat/completions", json=body("fake-a", "fake-b"))
    assert resp.status_code == 408
    error = resp.json()["error"]
    assert error["code"] == 408 and "timed out" in error["message"]
    assert [a["reason"] for a in error["metadata"]["attempts"]] == ["timeout", "timeout"]
    assert "0.5s" in error["metadata"]["attempts"][0]["error"]


def test_none_available_is_503(raw, upstreams):
    resp = raw.post(
        "/chat/completions",
        json={"model": "test/gpt", "messages": HELLO, "provider": {"only": ["nobody"]}},
    )
    assert resp.status_code == 503
    error = resp.json()["error"]
    assert error["code"] == 503 and "fake-a" in error["metadata"]["excluded"]
    assert all(not u.requests for u in upstreams.all())


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_provider_400_is_a_400_without_failover(client, live, secret, upstreams, org, stream):
    upstreams.a.push(
        Behaviour(kind="status", status=400, message="'temperature' is not supported with this model.")
    )
    before = balance(org)
    with pytest.raises(openai.BadRequestError) as caught:
        result = client.chat.completions.create(
            model="test/gpt", messages=HELLO, stream=stream, extra_body=route("fake-a", "fake-b")
        )
        if stream:
            list(result)
    error = caught.value.body
    assert caught.value.status_code == 400
    assert "temperature' is not supported" in error["message"]
    assert error["metadata"]["provider_name"] == "fake-a"
    assert not upstreams.b.requests  # no failover on the caller's own mistake
    gen_id = caught.value.response.headers["x-generation-id"]
    record = generation(live, secret, gen_id)
    assert [a["reason"] for a in record["attempts"]] == ["bad_request"]
    assert balance(org) == before and usage_entries(org) == []


@pytest.mark.parametrize("status", [401, 403])
def test_upstream_rejects_platform_key_502_without_leaking_it(raw, upstreams, status):
    leaked = KEYS["a"]
    upstreams.a.push(
        Behaviour(
            kind="status", status=status, message=f"Incorrect API key provided: {leaked}. Bearer {leaked}"
        )
    )
    resp = raw.post("/chat/completions", json=body("fake-a"))
    assert resp.status_code == 502
    assert resp.json()["error"]["code"] == 502
    assert "credentials" in resp.json()["error"]["message"]
    assert leaked not in resp.text and leaked[:20] not in resp.text
    assert upstreams.a.last_request.authorization == f"Bearer {leaked}"


def test_wrong_platform_key_fails_over_and_is_never_shown(client, live, secret, upstreams, monkeypatch):
    monkeypatch.setenv("SY_TEST_OAI_A_KEY", "sk-wrong-platform-key-0123456789")
    resp = client.chat.completions.create(
        model="test/gpt", messages=HELLO, extra_body=route("fake-a", "fake-b")
    )
    assert resp.model_extra["provider"] == "Fake B"
    record = generation(live, secret, resp.id)
    assert record["attempts"][0]["reason"] == "auth" and record["attempts"][0]["status"] == 502
    assert "sk-wrong" not in str(record)


async def test_async_client_fails_over(aclient, upstreams):
    upstreams.a.push("fail_502")
    stream = await aclient.chat.completions.create(
        model="test/gpt", messages=HELLO, stream=True, extra_body=route("fake-a", "fake-c")
    )
    chunks = [c async for c in stream]
    assert {c.model_extra["provider"] for c in chunks} == {"Fake C"}
    assert "Hello from fake-openai" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_streamed_all_fail_after_processing_comments_is_an_in_stream_error(live, raw, upstreams, settings):
    """Once keep-alive comments have started the response, the final failure arrives as an SSE error."""
    settings.SWITCHYARD_PROCESSING_COMMENT_SECONDS = Decimal("0.1")
    upstreams.a.push(Behaviour(kind="status", status=503, latency_ms=400))
    upstreams.b.push(Behaviour(kind="status", status=500, latency_ms=400))
    resp = raw.post("/chat/completions", json=body("fake-a", "fake-b", stream=True))
    assert resp.status_code == 200
    assert ": SWITCHYARD PROCESSING" in resp.text
    events = sse_events(resp.text)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == 502 and "fake-a" in error["message"] and "fake-b" in error["message"]


@pytest.mark.parametrize(("stream", "reason"), [(False, "provider_error"), (True, "stream_error")])
def test_error_object_in_a_200_body_fails_over_and_is_scrubbed(
    client, live, secret, upstreams, stream, reason
):
    leaked = KEYS["a"]
    upstreams.a.push(Behaviour(kind="error_in_body", after_chunks=0, message=f"overloaded (key {leaked})"))
    result = client.chat.completions.create(
        model="test/gpt", messages=HELLO, stream=stream, extra_body=route("fake-a", "fake-b")
    )
    chunks = list(result) if stream else []
    gen_id = chunks[0].id if stream else result.id
    record = generation(live, secret, gen_id)
    first = record["attempts"][0]
    assert (first["provider"], first["reason"], record["provider_name"]) == ("fake-a", reason, "fake-b")
    assert "overloaded" in first["error"] and leaked not in first["error"] and "[redacted]" in first["error"]


def test_all_rate_limited_passes_retry_after_on(raw, upstreams):
    upstreams.a.push(Behaviour(kind="status", status=429, retry_after=7))
    upstreams.b.push(Behaviour(kind="status", status=429, retry_after=7))
    resp = raw.post("/chat/completions", json=body("fake-a", "fake-b"))
    assert resp.status_code == 502 and resp.headers["retry-after"] == "7"
    assert [a["reason"] for a in resp.json()["error"]["metadata"]["attempts"]] == ["rate_limited"] * 2


def test_processing_comments_then_failover_then_the_answer(live, secret, raw, upstreams, settings):
    settings.SWITCHYARD_PROCESSING_COMMENT_SECONDS = Decimal("0.1")
    upstreams.a.push(Behaviour(kind="status", status=500, latency_ms=500))
    resp = raw.post("/chat/completions", json=body("fake-a", "fake-b", stream=True))
    assert resp.text.startswith(": SWITCHYARD PROCESSING")
    chunks = [json.loads(e) for e in sse_events(resp.text)[:-1]]
    assert {c["provider"] for c in chunks} == {"Fake B"} and chunks[-1]["choices"][0][
        "finish_reason"
    ] == "stop"
    record = generation(live, secret, resp.headers["x-generation-id"])
    assert [a["provider"] for a in record["attempts"]] == ["fake-a", "fake-b"]


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_redirect_is_a_failed_attempt_and_is_not_followed(client, live, secret, upstreams, stream):
    """A 3xx from a provider is a misconfigured base URL: never followed (the platform key and the prompt
    would go wherever it points), the next provider answers, and the attempt says why."""
    upstreams.a.push(Behaviour(kind="status", status=307, message="moved"))
    result = client.chat.completions.create(
        model="test/gpt", messages=HELLO, stream=stream, extra_body=route("fake-a", "fake-b")
    )
    if stream:
        chunks = list(result)
        assert {c.model_extra["provider"] for c in chunks} == {"Fake B"}
        gen_id = chunks[0].id
    else:
        assert result.model_extra["provider"] == "Fake B"
        gen_id = result.id
    assert len(upstreams.a.requests) == 1
    record = generation(live, secret, gen_id)
    first = record["attempts"][0]
    assert (first["reason"], first["status"], first["provider"]) == ("redirect", 502, "fake-a")
    assert "redirect (HTTP 307)" in first["error"]
