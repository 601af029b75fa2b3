"""Provider text that reaches a usage event (error messages in the attempts, the request's error) is
cleaned and bounded as the event is built: a NUL in an upstream error once made PostgreSQL's jsonb
refuse the generation row, and with it the whole usage batch."""

from __future__ import annotations

import pytest

from routing.models import Generation
from tests.conftest import flush_usage
from tests.gateway.openai_env import *  # noqa: F403 - the shared fixtures
from tests.gateway.openai_env import body, generation

pytestmark = pytest.mark.django_db(transaction=True)


def test_upstream_error_text_is_cleaned_before_it_is_stored(raw, live, secret, upstreams):
    hostile = "upstream broke\x00\x1b[31m" + "x" * 20_000
    upstreams.b.push({"kind": "status", "status": 503, "message": hostile})
    ok = raw.post("/chat/completions", json=body("fake-b", "fake-a"))
    assert ok.status_code == 200, ok.text
    upstreams.b.push({"kind": "status", "status": 503, "message": hostile})
    upstreams.c.push({"kind": "status", "status": 503, "message": hostile})
    failed = raw.post("/chat/completions", json=body("fake-b", "fake-c"))
    assert failed.status_code == 502, failed.text
    flush_usage()

    for resp in (ok, failed):
        gen_id = resp.headers["x-generation-id"]
        record = generation(live, secret, gen_id)
        for attempt in record["attempts"]:
            assert "\x00" not in str(attempt) and "\x1b" not in str(attempt)
            assert len(attempt.get("error") or "") <= 1000
        row = Generation.objects.get(pk=gen_id)
        assert "\x00" not in row.error and len(row.error) <= 4000
