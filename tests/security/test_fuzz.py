"""Schemathesis against the served OpenAPI schema, on the live ASGI server, with a real API key.

Every /api/ operation in the schema (the DRF views and the raw-ASGI gateway alike) gets generated valid
and invalid requests: no answer may be a 5xx, every answer must be documented, match its schema and
content type, and every error must be in the error shape. `make fuzz` runs the same test with many more
examples (SWITCHYARD_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import make_key, make_org

EXAMPLES = int(os.environ.get("SWITCHYARD_FUZZ_EXAMPLES", "20"))
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    ignored_auth,
]
FUZZ_STATS: dict[str, int] = {"cases": 0, "errors": 0}


@pytest.fixture(scope="module", autouse=True)
def _report_cases(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and FUZZ_STATS["cases"]:
        reporter.write_line(
            f"fuzz: {FUZZ_STATS['cases']} requests ({FUZZ_STATS['errors']} answered with an error), "
            f"{EXAMPLES} examples per operation"
        )


@schemathesis.check
def no_server_fault(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx of our own. The one 5xx a fuzzed request may earn is the documented 503 "no provider can
    serve these preferences" (e.g. `provider.only: ["x"]`, or an image for a text-only model), which must
    say why each endpoint was excluded (on /messages, in its message);
    the simulated provider never fails, so a 502 would be a bug too."""
    if response.status_code < 500:
        return None
    body = response.json()
    if case.path == "/api/v1/messages":  # Anthropic's shape has no metadata: the message says it
        message = (body.get("error") or {}).get("message", "")
        assert response.status_code == 503 and message.startswith("No provider can serve"), body
        return True
    excluded = (body.get("error") or {}).get("metadata", {}).get("excluded")
    assert response.status_code == 503 and excluded, f"server error {response.status_code}: {body}"
    return True


@schemathesis.check
def error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every error is JSON in the documented shape: Anthropic's on /messages, ours everywhere else."""
    if response.status_code < 400:
        return None
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.headers
    body = response.json()
    if case.path == "/api/v1/messages" and response.status_code != 405:
        assert body["type"] == "error" and set(body) == {"type", "error"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
        return True
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == response.status_code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return True


@pytest.fixture
def fuzz_key(live, security_catalog, settings):
    settings.STRIPE_WEBHOOK_SECRET = "whsec_fuzz"  # so the webhook's signature check is what gets fuzzed
    org = make_org(credits="50")
    return make_key(org, name="fuzz")[1]


@pytest.fixture
def api_schema(request, live, fuzz_key):
    # Schemathesis 4.32 reads `node._nodeid`, which pytest 9.2 no longer has; it only uses it to name
    # each operation's subtest.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid
    return schemathesis.openapi.from_url(f"{live.url}/api/v1/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case, live, fuzz_key):
    response = case.call_and_validate(
        base_url=live.url,
        headers={"Authorization": f"Bearer {fuzz_key}"},
        checks=CHECKS,
        additional_checks=[no_server_fault, error_shape],
        timeout=30,
    )
    FUZZ_STATS["cases"] += 1
    FUZZ_STATS["errors"] += response.status_code >= 400


def test_served_schema_documents_every_api_route(live):
    """The schema the fuzzer reads covers the gateway's routes and every DRF /api/ view."""
    import httpx
    from django.urls import get_resolver

    from routing.gateway.app import ROUTES

    served = httpx.get(f"{live.url}/api/v1/openapi.json").json()
    paths = set(served["paths"])
    assert set(ROUTES) <= paths
    for pattern in get_resolver().url_patterns:
        route = str(pattern.pattern)
        if route.startswith("api/v1/") and "openapi" not in route:
            documented = "/" + route.replace("<str:", "{").replace(">", "}")
            assert documented in paths, documented
    chat = served["paths"]["/api/v1/chat/completions"]["post"]
    assert chat["security"] == [{"bearerAuth": []}]
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert served["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


@pytest.mark.parametrize(
    "method,path,body,status",
    [
        ("POST", "/api/v1/chat/completions", {"model": "switchyard/sim-1", "messages": [{"role": {}}]}, 400),
        (
            "POST",
            "/api/v1/chat/completions",
            {"model": "switchyard/sim-1", "messages": [{"role": "user", "content": [{"type": ["text"]}]}]},
            400,
        ),
        ("POST", "/api/v1/embeddings", {"model": "switchyard/sim-embed", "input": [1, 2, 3]}, 200),
        ("GET", "/api/v1/generation?id=%00gen", None, 404),
        (
            "POST",
            "/api/v1/chat/completions",
            {
                "model": "switchyard/sim-1",
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": {"a": 1}}},
            },
            400,
        ),
    ],
    ids=[
        "role-object",
        "part-type-list",
        "single-token-array",
        "nul-in-generation-id",
        "tool-choice-name-object",
    ],
)
def test_inputs_the_fuzzer_once_crashed_on(live, fuzz_key, method, path, body, status):
    """Each of these was a 500 found by the fuzzer (the fourth only on PostgreSQL; the last by the
    random-shapes test, test_fuzz_shapes.py)."""
    import httpx

    response = httpx.request(
        method, f"{live.url}{path}", json=body, headers={"Authorization": f"Bearer {fuzz_key}"}, timeout=30
    )
    assert response.status_code == status, response.text
