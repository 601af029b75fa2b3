"""GET /api/v1/generation answers straight after the response ends, before the usage writer (embedded
thread or Celery drain) has put the row in the database: the settled event is readable meanwhile."""

from __future__ import annotations

from decimal import Decimal

import httpx
import openai
import pytest

from routing.models import Generation
from tests.conftest import flush_usage
from tests.factories import make_key, make_org

pytestmark = pytest.mark.django_db(transaction=True)


def _get(live, secret, gen_id):
    return httpx.get(
        f"{live.api}/generation", params={"id": gen_id}, headers={"Authorization": f"Bearer {secret}"}
    )


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_generation_is_readable_immediately(live, sim_catalog, stream):
    org = make_org(credits="5")
    _, secret = make_key(org)
    outsider = make_key(make_org(credits="1"))[1]
    client = openai.OpenAI(base_url=live.api, api_key=secret, max_retries=0)
    for i in range(8):
        messages = [{"role": "user", "content": f"hello {i}"}]
        if stream:
            chunks = list(
                client.chat.completions.create(
                    model="switchyard/sim-1",
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            gen_id, usage = chunks[0].id, chunks[-1].usage
        else:
            resp = client.chat.completions.create(model="switchyard/sim-1", messages=messages)
            gen_id, usage = resp.id, resp.usage
        # No polling: the first read after the response must find it.
        first = _get(live, secret, gen_id)
        assert first.status_code == 200, first.text
        data = first.json()["data"]
        assert data["id"] == gen_id and data["status"] == "success" and data["streamed"] is stream
        assert (data["tokens_prompt"], data["tokens_completion"]) == (
            usage.prompt_tokens,
            usage.completion_tokens,
        )
        assert Decimal(str(data["total_cost"])) == Decimal(str(usage.model_extra["cost"]))
        # Another organisation learns nothing, pending or written.
        assert _get(live, outsider, gen_id).status_code == 404
    flush_usage()
    # Once written, the database row says the same.
    row = Generation.objects.get(pk=gen_id)
    again = _get(live, secret, gen_id).json()["data"]
    assert again["total_cost"] == data["total_cost"] and row.tokens_completion == data["tokens_completion"]
