"""The upstream client's network behaviour against real servers on 127.0.0.1: an HTTP proxy (proxy.py,
run as its own process) with CONNECT tunnels and absolute-form requests, NO_PROXY, Happy Eyeballs,
the per-origin connection cap, the User-Agent and the trust store (a private CA)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
import uvloop

from routing.gateway import upstream
from routing.gateway.connect import interleave
from routing.gateway.proxy import parse_proxy
from routing.gateway.upstream import ConnectFailed, Pool, Proxies, ProxyConfigError, tls_context
from tests.fakes.processes import free_port, proxy_argv, running
from tests.fakes.tls import Certs, make_certs
from tests.gateway.test_upstream_client import HEADERS, OK, Server, keep_alive

PROXY_USER, PROXY_PASSWORD = "egress", "s3cret"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUEST_METHOD")


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        yield runner.run


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("upstream-tls"), server_names=("localhost",))


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    with running(proxy_argv(port), port, tmp_path_factory.mktemp("proxy") / "proxy.log"):
        yield port


@pytest.fixture(scope="module")
def auth_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    argv = proxy_argv(port, basic_auth=f"{PROXY_USER}:{PROXY_PASSWORD}")
    with running(argv, port, tmp_path_factory.mktemp("proxy") / "proxy.log"):
        yield port


def server_tls(certs: Certs) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    return context


def peer_port(resp: upstream.Response) -> int:
    transport = resp._conn.transport
    assert transport is not None
    port: int = transport.get_extra_info("peername")[1]
    return port


async def call(pool: Pool, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, int]:
    """(status, body, port of the peer this client's connection went to)."""
    resp = await pool.post(url, headers or HEADERS, b'{"q":1}', connect_timeout=5)
    try:
        return resp.status, await resp.read(), peer_port(resp)
    finally:
        resp.release()


# ---- proxies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY"])
def test_an_https_upstream_is_tunnelled_through_the_proxy(run, monkeypatch, proxy, certs, variable):
    monkeypatch.setenv(variable, f"http://127.0.0.1:{proxy}")

    async def case() -> None:
        async with Server(keep_alive(OK, OK), tls=server_tls(certs)) as server:
            pool = Pool(asyncio.get_running_loop(), tls_context(str(certs.ca)))
            try:
                for _ in range(2):  # the tunnel is a pooled connection like any other
                    status, body, peer = await call(pool, server.url)
                    assert (status, body) == (200, b'{"ok":true}')
                    assert peer == proxy  # this client spoke to the proxy, TLS to the upstream inside
            finally:
                pool.close()
            assert server.connections == 1 and len(server.requests) == 2
            assert server.requests[0].startswith(b"POST /v1/chat/completions?x=1 HTTP/1.1\r\n")

    run(case())


def test_an_http_upstream_goes_through_the_proxy_in_absolute_form(run, monkeypatch, proxy):
    monkeypatch.setenv("HTTP_PROXY", f"127.0.0.1:{proxy}")  # no scheme: http://, as urllib and httpx read it

    async def case() -> None:
        async with Server(keep_alive(OK)) as server:
            pool = Pool(asyncio.get_running_loop())
            try:
                status, body, peer = await call(pool, server.url)
            finally:
                pool.close()
        assert (status, body, peer) == (200, b'{"ok":true}', proxy)
        assert len(server.requests) == 1 and b'{"q":1}' in server.requests[0]

    run(case())


def test_the_request_line_through_a_proxy_is_absolute_form(run):
    """What the proxy receives (a plain server standing in for it records the bytes)."""

    async def case() -> None:
        async with Server(keep_alive(OK)) as fake_proxy:
            port = fake_proxy.url.split(":")[2].split("/")[0]
            proxies = Proxies.__new__(Proxies)
            proxies._no = ""
            proxies._by_scheme = {"http": parse_proxy("HTTP_PROXY", f"http://u%40x:p%3Aw@127.0.0.1:{port}")}
            pool = Pool(asyncio.get_running_loop(), proxies=proxies)
            try:
                status, _, _ = await call(pool, "http://provider.example:8080/v1/chat?x=1")
            finally:
                pool.close()
        assert status == 200
        head = fake_proxy.requests[0].split(b"\r\n\r\n")[0].split(b"\r\n")
        assert head[0] == b"POST http://provider.example:8080/v1/chat?x=1 HTTP/1.1"
        assert b"Host: provider.example:8080" in head
        assert b"Proxy-Authorization: Basic dUB4OnA6dw==" in head  # "u@x:p:w", unquoted from the URL

    run(case())


def test_proxy_credentials_from_the_url_are_sent(run, monkeypatch, auth_proxy, certs):
    async def case(url_of_proxy: str) -> tuple[int, bytes, int]:
        monkeypatch.setenv("HTTPS_PROXY", url_of_proxy)
        async with Server(keep_alive(OK), tls=server_tls(certs)) as server:
            pool = Pool(asyncio.get_running_loop(), tls_context(str(certs.ca)))
            try:
                return await call(pool, server.url)
            finally:
                pool.close()

    good = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{auth_proxy}"
    assert run(case(good)) == (200, b'{"ok":true}', auth_proxy)
    with pytest.raises(ConnectFailed, match=r"refused to tunnel to 127.0.0.1:.*407"):
        run(case(f"http://127.0.0.1:{auth_proxy}"))  # no credentials: the proxy says 407


def test_http_proxy_credentials_are_sent_in_absolute_form_requests(run, monkeypatch, auth_proxy):
    async def case(url_of_proxy: str) -> int:
        monkeypatch.setenv("HTTP_PROXY", url_of_proxy)
        async with Server(keep_alive(OK)) as server:
            pool = Pool(asyncio.get_running_loop())
            try:
                return (await call(pool, server.url))[0]
            finally:
                pool.close()

    assert run(case(f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{auth_proxy}")) == 200
    assert run(case(f"http://127.0.0.1:{auth_proxy}")) == 407


@pytest.mark.parametrize(
    "no_proxy",
    ["127.0.0.1", "*", "localhost,127.0.0.1", "127.0.0.1:{port}", ".example.com, 127.0.0.1"],
)
def test_no_proxy_bypasses_the_proxy(run, monkeypatch, proxy, no_proxy):
    async def case() -> None:
        async with Server(keep_alive(OK)) as server:
            port = int(server.url.split(":")[2].split("/")[0])
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy}")
            monkeypatch.setenv("NO_PROXY", no_proxy.format(port=port))
            pool = Pool(asyncio.get_running_loop())
            try:
                assert (await call(pool, server.url))[2] == port  # straight to the upstream
            finally:
                pool.close()

    run(case())


@pytest.mark.parametrize(
    ("no_proxy", "origin", "bypassed"),
    [
        ("example.com", ("https", "api.example.com", 443), True),  # a domain covers its subdomains
        (".example.com", ("https", "example.com", 443), True),
        ("example.com", ("https", "badexample.com", 443), False),  # not a mere suffix
        ("api.example.com:8443", ("https", "api.example.com", 443), False),  # that port only
        ("api.example.com:8443", ("https", "api.example.com", 8443), True),
        ("10.0.0.1", ("http", "10.0.0.1", 80), True),
        ("::1", ("http", "::1", 80), True),
        ("other.test, *", ("https", "anything.test", 443), True),
        ("", ("https", "api.example.com", 443), False),
    ],
)
def test_no_proxy_matching(monkeypatch, no_proxy, origin, bypassed):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("no_proxy", no_proxy)
    assert (Proxies().for_origin(origin) is None) == bypassed


def test_lower_case_variables_win_and_http_proxy_is_not_used_for_https(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://upper:1")
    monkeypatch.setenv("https_proxy", "http://lower:2")
    monkeypatch.setenv("HTTP_PROXY", "http://plain:3")
    proxies = Proxies()
    assert proxies.for_origin(("https", "a.test", 443)) == upstream.Proxy("lower", 2)
    assert proxies.for_origin(("http", "a.test", 80)) == upstream.Proxy("plain", 3)


@pytest.mark.parametrize("url", ["https://proxy.internal:3128", "socks5://proxy.internal:1080"])
def test_a_proxy_this_client_cannot_use_is_refused_naming_the_variable(monkeypatch, url):
    monkeypatch.setenv("HTTPS_PROXY", url)
    with pytest.raises(ProxyConfigError, match=r"HTTPS_PROXY=.*only http:// proxies"):
        upstream.check_configuration()


def test_the_route_is_decided_once_per_origin(run, monkeypatch, proxy):
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy}")

    async def case() -> None:
        async with Server(keep_alive(OK, OK)) as server:
            pool = Pool(asyncio.get_running_loop())
            calls: list[object] = []
            real = pool.proxies.for_origin

            def counted(origin: upstream.Origin) -> upstream.Proxy | None:
                calls.append(origin)
                return real(origin)

            monkeypatch.setattr(pool.proxies, "for_origin", counted)
            try:
                await call(pool, server.url)
                await call(pool, server.url)
            finally:
                pool.close()
            assert len(calls) == 1

    run(case())


# ---- Happy Eyeballs ----------------------------------------------------------------------------


def blackhole() -> tuple[socket.socket, list[socket.socket], int]:
    """A listening socket whose accept queue is full, so a new connection to it hangs (like an
    unroutable address): (listener, the sockets filling its queue, port)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    time.sleep(0.1)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(("127.0.0.1", port))
        hangs = False
    except (TimeoutError, OSError):
        hangs = True
    finally:
        probe.close()
    if not hangs:
        pytest.skip("this kernel does not drop connections to a full accept queue")
    return listener, fillers, port


@pytest.mark.parametrize("first", ["hangs", "refuses"])
def test_a_dead_first_address_does_not_burn_the_connect_timeout(run, first):
    listener, fillers, dead_port = blackhole()
    if first == "refuses":
        dead_port = free_port()  # nothing listens there

    async def case() -> float:
        async with Server(keep_alive(OK)) as server:
            port = int(server.url.split(":")[2].split("/")[0])

            async def resolve(host: str, _port: int) -> list[tuple[int, object]]:
                assert host == "provider.test"
                # As a dual-stack name would: the first address dead, the second one answering.
                return [(socket.AF_INET, ("127.0.0.1", dead_port)), (socket.AF_INET, ("127.0.0.1", port))]

            pool = Pool(asyncio.get_running_loop(), resolve=resolve)
            started = time.monotonic()
            try:
                resp = await pool.post(f"http://provider.test:{port}/v1", HEADERS, b"{}", connect_timeout=10)
                assert resp.status == 200 and await resp.read() == b'{"ok":true}'
                resp.release()
            finally:
                pool.close()
            return time.monotonic() - started

    try:
        elapsed = run(case())
    finally:
        listener.close()
        for s in fillers:
            s.close()
    assert elapsed < 2.0  # HAPPY_EYEBALLS_DELAY (0.25 s), not the 10 s connect timeout


def test_interleaving_alternates_families():
    v6a, v6b = (socket.AF_INET6, ("::1", 1, 0, 0)), (socket.AF_INET6, ("::2", 1, 0, 0))
    v4a, v4b = (socket.AF_INET, ("10.0.0.1", 1)), (socket.AF_INET, ("10.0.0.2", 1))
    assert interleave([v6a, v6b, v4a, v4b]) == [v6a, v4a, v6b, v4b]


def test_every_address_dead_is_one_connect_failure(run):
    async def case() -> None:
        ports = [free_port(), free_port()]

        async def resolve(host: str, _port: int) -> list[tuple[int, object]]:
            return [(socket.AF_INET, ("127.0.0.1", p)) for p in ports]

        pool = Pool(asyncio.get_running_loop(), resolve=resolve)
        with pytest.raises(ConnectFailed, match=r"no address of provider.test answered"):
            await pool.post("http://provider.test/v1", HEADERS, b"{}", connect_timeout=2)
        assert pool.open.get(("http", "provider.test", 80), 0) == 0

    run(case())


# ---- the per-origin connection cap -------------------------------------------------------------


def test_calls_past_the_cap_wait_for_a_free_connection(run):
    release = asyncio.Event()

    async def handler(server: Server, reader, writer) -> None:  # type: ignore[no-untyped-def]
        while True:
            await server.read_request(reader)
            await release.wait()
            writer.write(OK)
            await writer.drain()

    async def case() -> None:
        async with Server(handler) as server:
            pool = Pool(asyncio.get_running_loop(), max_per_origin=2)
            try:
                calls = [asyncio.ensure_future(call(pool, server.url)) for _ in range(3)]
                await asyncio.sleep(0.3)
                assert server.connections == 2 and len(server.requests) == 2  # the third waits
                release.set()
                results = await asyncio.gather(*calls)
                assert [r[:2] for r in results] == [(200, b'{"ok":true}')] * 3
                assert server.connections == 2  # the third reused a connection that came free
            finally:
                pool.close()

    run(case())


def test_a_call_that_finds_no_free_connection_within_the_connect_timeout_fails(run):
    async def handler(server: Server, reader, writer) -> None:  # type: ignore[no-untyped-def]
        await server.read_request(reader)
        await reader.read()  # never answers

    async def case() -> None:
        async with Server(handler) as server:
            pool = Pool(asyncio.get_running_loop(), max_per_origin=1)
            first = asyncio.ensure_future(pool.post(server.url, HEADERS, b"{}", connect_timeout=2))
            await asyncio.sleep(0.2)
            with pytest.raises(ConnectFailed, match="SWITCHYARD_UPSTREAM_MAX_CONNECTIONS_PER_ORIGIN"):
                await pool.post(server.url, HEADERS, b"{}", connect_timeout=0.3)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            await asyncio.sleep(0.05)
            assert sum(pool.open.values()) == 0  # the cancelled call's connection gave its place back
            pool.close()

    run(case())


def test_a_closed_connection_frees_its_place_for_a_waiting_call(run):
    async def handler(server: Server, reader, writer) -> None:  # type: ignore[no-untyped-def]
        await server.answer(
            reader, writer, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
        )

    async def case() -> None:
        async with Server(handler) as server:
            pool = Pool(asyncio.get_running_loop(), max_per_origin=1)
            try:
                results = await asyncio.gather(*(call(pool, server.url) for _ in range(3)))
            finally:
                pool.close()
            assert [r[:2] for r in results] == [(200, b"ok")] * 3 and server.connections == 3

    run(case())


# ---- User-Agent and trust ----------------------------------------------------------------------


def test_user_agent_is_sent_unless_the_adapter_sets_one(run):
    async def case() -> None:
        async with Server(keep_alive(OK, OK)) as server:
            pool = Pool(asyncio.get_running_loop())
            try:
                await call(pool, server.url)
                await call(pool, server.url, {**HEADERS, "user-agent": "provider-sdk/1"})
            finally:
                pool.close()
        first, second = (r.split(b"\r\n\r\n")[0].lower() for r in server.requests)
        assert b"\r\nuser-agent: switchyard/" in first
        assert second.count(b"user-agent") == 1 and b"user-agent: provider-sdk/1" in second

    run(case())


def test_a_private_ca_is_trusted_through_the_setting_or_ssl_cert_file(run, monkeypatch, certs):
    async def case(context: ssl.SSLContext) -> int:
        async with Server(keep_alive(OK), tls=server_tls(certs)) as server:
            pool = Pool(asyncio.get_running_loop(), context)
            try:
                return (await call(pool, server.url.replace("127.0.0.1", "localhost")))[0]
            finally:
                pool.close()

    assert run(case(tls_context(str(certs.ca)))) == 200  # SWITCHYARD_UPSTREAM_CA_BUNDLE
    with pytest.raises(ConnectFailed):
        run(case(tls_context()))  # the system store alone: not trusted
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca))  # OpenSSL's own variable, read by the context
    assert run(case(tls_context())) == 200


def test_an_unreadable_ca_bundle_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(ValueError, match=r"SWITCHYARD_UPSTREAM_CA_BUNDLE=.*cannot be loaded"):
        tls_context(str(tmp_path / "missing.pem"))
