"""Two web processes (`manage.py serve`) and a Celery worker on one PostgreSQL and one Redis: credit
holds, key revocation and catalog changes are consistent across processes (full mode only)."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db.models import Sum

from accounts.services import api_key_set_disabled
from routing.models import Endpoint, Generation
from routing.services import endpoint_set_enabled
from switchyard.money import UNITS_PER_USD
from tests.conftest import flush_usage
from tests.factories import make_key, make_org
from tests.production.procs import NO_HOLDS, Served, load_slow_catalog, open_holds

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.REDIS_URL,
        reason="full mode only: processes share state through Redis and PostgreSQL (set DATABASE_URL and REDIS_URL)",
    ),
]

PROMPT = [{"role": "user", "content": "Count to ten."}]


@pytest.fixture
def two_servers(sim_catalog, celery_worker_process):
    load_slow_catalog()
    servers = [Served(workers=1), Served(workers=1)]
    try:
        for s in servers:
            s.wait_ready()
        yield servers
    finally:
        for s in servers:
            s.stop()


def _chat(server: Served, key: str, model: str = "switchyard/sim-1", **extra: object) -> httpx.Response:
    return httpx.post(
        server.api + "/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": PROMPT, **extra},
        timeout=60,
    )


def _until(check, seconds: float) -> float:  # type: ignore[no-untyped-def]
    """Poll `check()` until true; returns the seconds it took, or fails after `seconds`."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"not seen within {seconds} s")


def test_holds_never_overspend_across_processes(two_servers):
    # The worst case of one request, as the gateway computes it: ask with no credit at all.
    probe_key = make_key(make_org(credits=None))[1]
    probe = _chat(two_servers[0], probe_key, "switchyard/sim-steady", max_tokens=100, stream=True)
    assert probe.status_code == 402
    worst = Decimal(probe.json()["error"]["metadata"]["required"])
    # Credit for exactly three concurrent requests (plus one picodollar).
    granted = worst * 3 + Decimal("0.000000000001")
    org = make_org(credits=str(granted))
    key = make_key(org)[1]

    results: list[tuple[int, int]] = []
    start = threading.Barrier(10)

    def one(i: int) -> None:
        server = two_servers[i % 2]
        start.wait()
        with httpx.stream(
            "POST",
            server.api + "/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "switchyard/sim-steady", "messages": PROMPT, "max_tokens": 100, "stream": True},
            timeout=60,
        ) as resp:
            body = resp.read()
            results.append((i % 2, resp.status_code))
            if resp.status_code == 200:
                assert body.rstrip().endswith(b"data: [DONE]")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert len(results) == 10
    ok = [p for p, status in results if status == 200]
    refused = [p for p, status in results if status == 402]
    assert len(ok) + len(refused) == 10
    # Each process alone would have admitted three: together they admit at most three.
    assert 1 <= len(ok) <= 3
    assert set(refused) == {0, 1}  # both processes refused some: they saw the other's holds
    assert open_holds(org.id) == NO_HOLDS
    flush_usage()
    spent = Generation.objects.filter(organization=org).aggregate(s=Sum("cost_units"))["s"]
    assert Generation.objects.filter(organization=org, status="success").count() == len(ok)
    assert 0 < spent <= granted * UNITS_PER_USD
    org.refresh_from_db()
    assert org.balance_units == granted * UNITS_PER_USD - spent >= 0


def test_key_revocation_is_seen_by_every_process_within_5_seconds(two_servers):
    api_key, key = make_key(make_org(credits="1"))
    for server in two_servers:
        assert _chat(server, key).status_code == 200
    api_key_set_disabled(key=api_key, disabled=True)
    for server in two_servers:
        _until(lambda server=server: _chat(server, key).status_code == 401, 5.0)
    body = _chat(two_servers[1], key).json()
    assert body["error"]["code"] == 401


def test_catalog_changes_reach_every_process_within_seconds(two_servers, tmp_path: Path):
    key = make_key(make_org(credits="1"))[1]
    for server in two_servers:
        assert _chat(server, key, "switchyard/sim-fresh").status_code == 404
    fresh = tmp_path / "fresh.yaml"
    fresh.write_text(
        "providers:\n"
        "  - {slug: sim-fresh, name: Fresh Simulator, api_format: simulated, base_url: 'sim://local'}\n"
        "models:\n"
        "  - slug: switchyard/sim-fresh\n"
        "    name: Fresh\n"
        "    context_length: 8192\n"
        "    endpoints:\n"
        "      - {provider: sim-fresh, provider_model_id: sim-1, pricing: {prompt: '0.10', completion: '0.40'},"
        " context_length: 8192, max_completion_tokens: 1024}\n"
    )
    from routing.catalog.loader import catalog_load

    catalog_load([fresh])
    for server in two_servers:
        _until(lambda server=server: _chat(server, key, "switchyard/sim-fresh").status_code == 200, 10.0)
    endpoint_set_enabled(endpoint=Endpoint.objects.get(model__slug="switchyard/sim-fresh"), enabled=False)
    for server in two_servers:
        _until(lambda server=server: _chat(server, key, "switchyard/sim-fresh").status_code != 200, 10.0)
    gone = _chat(two_servers[0], key, "switchyard/sim-fresh")
    assert gone.status_code in (404, 503) and gone.json()["error"]["code"] == gone.status_code
