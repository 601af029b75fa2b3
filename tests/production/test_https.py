"""Production settings over plain HTTP: the whole `/api/v1` API answers one JSON 403 naming HTTPS (never a
301 a POST client would not follow), the dashboard still redirects, and the one switch for a private
network, SWITCHYARD_PLAIN_HTTP=1, turns off the redirect, the Secure cookies and HSTS."""

from __future__ import annotations

import httpx
import pytest

from tests.production.procs import Served

pytestmark = pytest.mark.django_db(transaction=True)

PROD = {"DEBUG": "0", "SECRET_KEY": "s" * 50, "SWITCHYARD_ENCRYPTION_KEYS": "A" * 43 + "="}
CHAT = {"model": "switchyard/sim-1", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def served(request):
    servers: list[Served] = []

    def start(**env: str) -> Served:
        server = Served(**PROD, **env).wait_ready()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _assert_https_refusal(resp: httpx.Response) -> None:
    assert resp.status_code == 403, (resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert error["code"] == 403 and "HTTPS" in error["message"]
    assert "SWITCHYARD_PLAIN_HTTP" in error["message"]


def test_the_api_refuses_plain_http_uniformly_with_json(served, sim_catalog):
    server = served()
    with httpx.Client(follow_redirects=False, timeout=30) as client:
        _assert_https_refusal(client.post(server.api + "/chat/completions", json=CHAT))  # the hot path
        _assert_https_refusal(client.get(server.api + "/models"))  # the hot path's GET
        _assert_https_refusal(client.get(server.api + "/key"))  # a DRF view
        _assert_https_refusal(client.get(server.api + "/credits"))
        # Behind a TLS proxy (X-Forwarded-Proto: https) the API answers as usual.
        proxied = {"X-Forwarded-Proto": "https"}
        assert client.get(server.api + "/key", headers=proxied).status_code == 401
        assert client.post(server.api + "/chat/completions", json=CHAT, headers=proxied).status_code == 401
        assert client.get(server.api + "/models", headers=proxied).status_code == 200
        # The dashboard and admin still redirect a browser to HTTPS; probes are not redirected.
        assert client.get(server.url + "/admin/login/").status_code == 301
        assert client.get(server.url + "/healthz").status_code == 200


def test_one_switch_serves_plain_http_on_a_private_network(served, sim_catalog):
    server = served(SWITCHYARD_PLAIN_HTTP="1")
    with httpx.Client(follow_redirects=False, timeout=30) as client:
        assert client.get(server.api + "/key").status_code == 401
        assert client.post(server.api + "/chat/completions", json=CHAT).status_code == 401
        page = client.get(server.url + "/admin/login/")
        assert page.status_code == 200
        assert "strict-transport-security" not in page.headers
        cookies = page.headers.get_list("set-cookie")
        assert cookies and not any("secure" in c.lower().split("; ") for c in cookies)
