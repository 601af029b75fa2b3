"""`POST /api/v1/embeddings` to a Gemini-format endpoint (batchEmbedContents on the fake Gemini server):
the wire format, both encodings, usage counted by Switchyard (Gemini reports none), failures."""

# ruff: noqa: F811 - the fixtures imported from test_native_providers are test parameters here

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from routing.gateway.tokens import count_text
from switchyard.money import from_units
from tests.fakes.gemini_upstream import Script as GScript
from tests.gateway.test_native_providers import (  # noqa: F401 - fixtures
    fakes,
    gen,
    native_catalog,
    oai,
    org,
    secret,
)

pytestmark = pytest.mark.django_db(transaction=True)

M = Decimal(1_000_000)


def test_gemini_embeddings_wire_format_and_estimated_usage(oai, fakes):
    upstream = fakes["gemini"]
    resp = oai.embeddings.create(
        model="test/gemini-embed",
        input=["hello world", "second text"],
        dimensions=16,
        encoding_format="float",
    )
    sent = upstream.last
    assert sent.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert sent.headers["x-goog-api-key"] == upstream.api_key and sent.problems == []
    assert sent.json == {
        "requests": [
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": "hello world"}]},
                "outputDimensionality": 16,
            },
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": "second text"}]},
                "outputDimensionality": 16,
            },
        ]
    }
    assert [d.index for d in resp.data] == [0, 1] and len(resp.data[0].embedding) == 16
    assert resp.data[0].embedding != resp.data[1].embedding
    tokens = count_text("hello world") + count_text("second text")
    assert resp.usage.prompt_tokens == tokens
    expected = tokens * Decimal("0.15") / M
    assert Decimal(str(resp.usage.model_extra["cost"])) == expected
    record = gen(resp.model_extra["id"])
    assert record.kind == "embedding" and record.provider == "fake-gemini"
    assert record.usage_estimated and from_units(record.cost_units) == expected

    # The SDK's default encoding is base64 (float32): it decodes to the same values.
    again = oai.embeddings.create(model="test/gemini-embed", input="hello world", dimensions=16)
    assert "outputDimensionality" in upstream.last.json["requests"][0]
    assert again.data[0].embedding == pytest.approx(resp.data[0].embedding, abs=1e-6)


def test_gemini_embeddings_failures(oai, fakes):
    upstream = fakes["gemini"]
    upstream.push(GScript(kind="status", status=503))
    with pytest.raises(openai.APIStatusError) as err:
        oai.embeddings.create(model="test/gemini-embed", input="x")
    assert err.value.status_code == 502
    before = len(upstream.requests)
    # Token arrays cannot be sent to Gemini: nothing else can serve them, so the request is at fault.
    with pytest.raises(openai.BadRequestError, match="token arrays"):
        oai.embeddings.create(model="test/gemini-embed", input=[[1, 2, 3]])
    with pytest.raises(openai.BadRequestError, match="at most 100 inputs"):
        oai.embeddings.create(model="test/gemini-embed", input=["x"] * 101)
    assert len(upstream.requests) == before
