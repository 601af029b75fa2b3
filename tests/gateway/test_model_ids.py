"""Model ids are checked at every front door: a `model` (or `models` entry) holding control characters
or longer than the generation record can store is a 400 naming the field, before any routing, hold or
usage event (an id the database cannot store used to freeze the usage batch it rode in)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from routing.models import Generation
from tests.factories import make_key, make_org

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "hi"}]
BAD_IDS = {
    "nul": "switchyard/sim-1\x00evil",
    "newline": "switchyard/sim-1\nX-Injected: 1",
    "del": "switchyard/\x7fsim-1",
    "c1": "switchyard/sim-1\x85",
    "line-separator": "switchyard/sim-1\u2028",
    "too-long": "switchyard/" + "x" * 189,  # 200 characters
}


def _bodies(model: Any, models: Any = None) -> dict[str, dict[str, Any]]:
    extra = {} if models is None else {"models": models}
    return {
        "/chat/completions": {"model": model, "messages": HELLO, **extra},
        "/completions": {"model": model, "prompt": "hi", **extra},
        "/messages": {"model": model, "max_tokens": 16, "messages": HELLO, **extra},
        "/embeddings": {"model": model, "input": "hi", **extra},
    }


@pytest.fixture
def secret(live, sim_catalog) -> str:
    return make_key(make_org(credits="1"))[1]


def _post(live: Any, secret: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(live.api + path, json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=30)


def _assert_names(resp: httpx.Response, path: str, field: str) -> None:
    assert resp.status_code == 400, (path, resp.status_code, resp.text)
    payload = resp.json()
    if path == "/messages":  # Anthropic's error shape
        assert payload["type"] == "error"
        assert payload["error"]["type"] == "invalid_request_error"
        assert payload["error"]["message"].startswith(f"{field}:"), payload
    else:
        assert payload["error"]["code"] == 400
        assert payload["error"]["metadata"]["field"] == field, payload
        assert payload["error"]["message"].startswith(f"{field}:"), payload


def test_the_bound_is_what_the_generation_record_stores() -> None:
    from routing.gateway.validate import MAX_MODEL_ID

    assert Generation._meta.get_field("model").max_length == MAX_MODEL_ID


@pytest.mark.parametrize("bad", list(BAD_IDS), ids=list(BAD_IDS))
def test_bad_model_is_a_400_naming_model_at_every_front_door(live, secret, bad):
    for path, body in _bodies(BAD_IDS[bad]).items():
        _assert_names(_post(live, secret, path, body), path, "model")
    assert not Generation.objects.exists()  # refused before anything was routed or recorded


@pytest.mark.parametrize("bad", ["nul", "too-long", "c1"])
def test_bad_fallback_entry_is_a_400_naming_its_index(live, secret, bad):
    models = ["switchyard/sim-1", BAD_IDS[bad]]
    for path, body in _bodies("switchyard/sim-1", models).items():
        _assert_names(_post(live, secret, path, body), path, "models[1]")


def test_an_id_at_the_bound_is_routed_not_refused(live, secret):
    longest = "acme/" + "m" * (128 - 5)
    resp = _post(live, secret, "/chat/completions", {"model": longest, "messages": HELLO})
    assert resp.status_code == 404, resp.text  # an unknown model, not a malformed id
    tab = _post(live, secret, "/chat/completions", {"model": "switchyard/sim-1", "messages": HELLO})
    assert tab.status_code == 200, tab.text
