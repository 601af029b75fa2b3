"""Read deadlines and the connection limit of `manage.py serve` (switchyard/server.py), with real sockets.

A client that trickles its request headers or body a byte at a time used to hold its connection for
as long as it liked (one stayed open 75 s); an idle connection that never sent a byte, forever. Now
the headers must arrive within SWITCHYARD_HEADER_TIMEOUT and the body within SWITCHYARD_BODY_TIMEOUT
(whole deadlines: the trickle never stops, so a silence timeout would never fire), and a process
takes at most SWITCHYARD_MAX_CONNECTIONS connections."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.factories import make_key, make_org
from tests.production.procs import Served

pytestmark = pytest.mark.django_db(transaction=True)

HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 2.0
# The server is a separate process on a shared 2-core box: a cut may come this much late.
SLACK = 2.5
GIVE_UP = 15.0  # the test stops trickling after this long (before the fix: never cut)


@pytest.fixture(scope="module")
def served(django_db_setup, django_db_blocker):
    server = Served(
        SWITCHYARD_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        SWITCHYARD_BODY_TIMEOUT=str(BODY_TIMEOUT),
        SWITCHYARD_KEEP_ALIVE_SECONDS="10",
    ).wait_ready()
    yield server
    server.stop()


@pytest.fixture
def secret(served, sim_catalog):
    return make_key(make_org(credits="5"))[1]


def _connect(server: Served) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=GIVE_UP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _trickle_until_cut(sock: socket.socket, data: bytes, interval: float = 0.1) -> tuple[float, bytes]:
    """Send `data` one byte per `interval` (then keep sending spaces) until the server answers or
    closes; (seconds until then, everything it sent)."""
    start = time.monotonic()
    sock.settimeout(interval)
    received = b""
    i = 0
    while time.monotonic() - start < GIVE_UP:
        try:
            sock.sendall(data[i : i + 1] if i < len(data) else b" ")
        except OSError:  # the server closed: what it sent before is still readable
            break
        i += 1
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        received += chunk
    elapsed = time.monotonic() - start
    sock.settimeout(2)
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except OSError:
        pass
    return elapsed, received


def _response(raw: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body) if body else {}


def test_trickled_headers_are_cut_with_a_408(served):
    sock = _connect(served)
    request = b"POST /api/v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 10_000
    elapsed, raw = _trickle_until_cut(sock, request)
    sock.close()
    assert elapsed < HEADER_TIMEOUT + SLACK, f"still open after {elapsed:.1f}s"
    assert elapsed >= HEADER_TIMEOUT - 0.2
    status, headers, body = _response(raw)
    assert status == 408 and headers["content-type"] == "application/json"
    assert body["error"]["code"] == 408 and "headers" in body["error"]["message"]


def test_a_connection_that_never_sends_is_closed(served):
    sock = _connect(served)
    start = time.monotonic()
    sock.settimeout(GIVE_UP)
    raw = b""
    try:
        while chunk := sock.recv(65536):
            raw += chunk
    except TimeoutError:
        pass
    elapsed = time.monotonic() - start
    sock.close()
    assert elapsed < HEADER_TIMEOUT + SLACK, f"still open after {elapsed:.1f}s"
    assert _response(raw)[0] == 408


@pytest.mark.parametrize("path", ["/api/v1/chat/completions", "/api/v1/messages", "/dashboard/"])
def test_a_trickled_body_gets_a_408_json_in_the_paths_error_shape(served, secret, path):
    sock = _connect(served)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    ).encode()
    sock.sendall(head)
    elapsed, raw = _trickle_until_cut(sock, b'{"model": "switchyard/sim-1", "messages": [' + b" " * 99_000)
    sock.close()
    assert elapsed < BODY_TIMEOUT + SLACK, f"still open after {elapsed:.1f}s"
    status, headers, body = _response(raw)
    assert status == 408 and headers["content-type"] == "application/json", raw[:500]
    assert headers.get("connection") == "close"
    if path == "/api/v1/messages":
        assert body["type"] == "error" and body["error"]["type"] == "timeout_error", body
    else:
        assert body["error"]["code"] == 408 and "body" in body["error"]["message"], body


def test_prompt_clients_and_keep_alive_are_unaffected(served, secret):
    """A kept-alive connection may sit idle between requests longer than the header deadline (the
    deadline starts at the next request's first byte; idling is the keep-alive timeout's business)."""
    with httpx.Client(base_url=served.api, headers={"Authorization": f"Bearer {secret}"}) as client:
        body = {"model": "switchyard/sim-1", "messages": [{"role": "user", "content": "hi"}]}
        first = client.post("/chat/completions", json=body)
        time.sleep(HEADER_TIMEOUT + 1)
        second = client.post("/chat/completions", json=body)
    assert first.status_code == 200 and second.status_code == 200


def test_connections_beyond_the_limit_get_a_503_json(sim_catalog):
    server = Served(SWITCHYARD_MAX_CONNECTIONS="3", SWITCHYARD_HEADER_TIMEOUT="30").wait_ready()
    held = []
    try:
        held = [_connect(server) for _ in range(3)]
        time.sleep(0.5)  # (the server has accepted them)
        resp = httpx.get(server.url + "/readyz", timeout=10)
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
        assert resp.json()["error"]["code"] == 503
        for sock in held:
            sock.close()
        held = []
        deadline = time.monotonic() + 10
        while httpx.get(server.url + "/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the limit did not free up"
            time.sleep(0.1)
    finally:
        for sock in held:
            sock.close()
        server.stop()
