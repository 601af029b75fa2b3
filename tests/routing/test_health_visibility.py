"""Health made visible: `/models/{author}/{slug}/endpoints` reports each endpoint's live uptime,
latency, throughput and circuit; the admin health page shows providers, endpoints and circuit states,
and disables an endpoint or a provider (or closes a circuit) in one click."""

from __future__ import annotations

import httpx
import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import User
from routing.health import book
from routing.models import Endpoint, Provider
from tests.routing.route_env import *  # noqa: F403 - the shared fixtures
from tests.routing.route_env import HELLO, endpoint_ids

pytestmark = pytest.mark.django_db(transaction=True)


def endpoints(live) -> dict[str, dict]:
    resp = httpx.get(f"{live.api}/models/test/route/endpoints")
    assert resp.status_code == 200
    return {e["tag"]: e for e in resp.json()["data"]["endpoints"]}


def post(http, provider):
    return http.post(
        "/chat/completions", json={"model": "test/route", "messages": HELLO, "provider": provider}
    )


def test_endpoints_api_shows_live_uptime_latency_throughput_and_circuit(settings, live, http, upstreams):
    settings.SWITCHYARD_BREAKER_THRESHOLD = 2
    before = endpoints(live)
    assert before["r-a"]["uptime_last_30m"] is None and before["r-a"]["requests_last_30m"] == 0
    upstreams.a.set_default("fail_500")
    for _ in range(2):
        assert post(http, {"order": ["r-a", "r-b"]}).status_code == 200
    for _ in range(2):
        assert post(http, {"order": ["r-c"]}).status_code == 200
    stream = http.post(
        "/chat/completions",
        json={"model": "test/route", "messages": HELLO, "stream": True, "provider": {"order": ["r-c"]}},
    )
    assert stream.status_code == 200
    data = endpoints(live)
    a, b, c = data["r-a"], data["r-b"], data["r-c"]
    assert (a["uptime_last_30m"], a["requests_last_30m"], a["circuit"]) == (0.0, 2, "open")
    assert a["latency_last_30m"] is None  # no successful request to time
    assert (b["uptime_last_30m"], b["requests_last_30m"], b["circuit"]) == (100.0, 2, "closed")
    assert (c["uptime_last_30m"], c["requests_last_30m"]) == (100.0, 3)
    for row in (b, c):
        assert isinstance(row["latency_last_30m"], int) and row["latency_last_30m"] >= 0
        assert row["throughput_last_30m"] > 0
        assert row["ttft_last_30m"] is not None


@pytest.fixture
def admin_client(live, route_catalog) -> Client:
    user = User.objects.create_superuser(email="ops@example.com", password="pw-for-tests-1")
    client = Client()
    client.force_login(user)
    return client


def test_admin_health_page_shows_circuits_and_disables_in_one_click(
    settings, admin_client, live, http, upstreams
):
    settings.SWITCHYARD_BREAKER_THRESHOLD = 2
    upstreams.a.set_default("fail_503")
    for _ in range(2):
        post(http, {"order": ["r-a", "r-b"]})
    ids = endpoint_ids()
    url = reverse("admin:routing_endpoint_health")
    page = admin_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Route A (r-a)" in html and "Route B (r-b)" in html
    row_a = html[html.index(f'id="endpoint-{ids["r-a"]}"') :]
    row_a = row_a[: row_a.index("</tr>")]
    assert 'class="circuit-open"' in row_a and ">2<" in row_a  # open, two failures in a row
    row_b = html[html.index(f'id="endpoint-{ids["r-b"]}"') :]
    assert 'class="circuit-closed"' in row_b[: row_b.index("</tr>")]
    # The endpoint list links to the page and shows each circuit.
    listing = admin_client.get(reverse("admin:routing_endpoint_changelist")).content.decode()
    assert url in listing and "open" in listing

    act = reverse("admin:routing_endpoint_health_act")
    resp = admin_client.post(act, {"action": "disable_endpoint", "id": ids["r-b"]})
    assert resp.status_code == 302 and resp["Location"] == url
    assert Endpoint.objects.get(pk=ids["r-b"]).enabled is False
    # The gateway stops routing to it (the catalog reloads within a second).
    import time

    deadline = time.monotonic() + 10
    while True:
        resp = post(http, {"only": ["r-b"]})
        if resp.status_code == 503:
            break
        assert time.monotonic() < deadline, "the disabled endpoint was still routed to"
        time.sleep(0.2)

    admin_client.post(act, {"action": "disable_provider", "id": Provider.objects.get(slug="r-c").pk})
    assert Provider.objects.get(slug="r-c").enabled is False
    admin_client.post(act, {"action": "enable_endpoint", "id": ids["r-b"]})
    assert Endpoint.objects.get(pk=ids["r-b"]).enabled is True

    # Close a circuit by hand.
    resp = admin_client.post(act, {"action": "reset_breaker", "id": ids["r-a"]})
    assert resp.status_code == 302
    assert book.state(ids["r-a"]) == "closed"
    assert endpoints(live)["r-a"]["circuit"] == "closed"


def test_admin_health_actions_need_change_permission(live, route_catalog):
    viewer = User.objects.create_user(email="viewer@example.com", password="pw-for-tests-1", is_staff=True)
    client = Client()
    client.force_login(viewer)
    assert client.get(reverse("admin:routing_endpoint_health")).status_code == 403
    ids = endpoint_ids()
    resp = client.post(
        reverse("admin:routing_endpoint_health_act"), {"action": "disable_endpoint", "id": ids["r-a"]}
    )
    assert resp.status_code == 403
    assert Endpoint.objects.get(pk=ids["r-a"]).enabled is True
    # GET is not allowed on the action URL even for a superuser-like session.
    assert client.get(reverse("admin:routing_endpoint_health_act")).status_code in (403, 405)
