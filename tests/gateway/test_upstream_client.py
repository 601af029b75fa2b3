"""The upstream HTTP/1.1 client (routing/gateway/upstream.py) against real servers on 127.0.0.1 that
write exactly the bytes each case needs, under both the standard event loop and uvloop (production).

Each case is a `handler(server, reader, writer)` for every connection the client opens, and a coroutine
that uses the client: `run(served(handler, case))`."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeAlias

import pytest
import uvloop

from routing.gateway import http1, upstream
from routing.gateway.upstream import ConnectFailed, Disconnected, Pool, ProtocolFailure

Reader: TypeAlias = asyncio.StreamReader
Writer: TypeAlias = asyncio.StreamWriter
Handler = Callable[["Server", Reader, Writer], Awaitable[None]]
Case = Callable[["Server", Pool], Awaitable[None]]

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-platform"}
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        yield runner.run


class Server:
    """Answers each connection with `handler`; counts connections and keeps the requests' bytes."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}/v1/chat/completions?x=1"

    async def _serve(self, reader: Reader, writer: Writer) -> None:
        self.connections += 1
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: Reader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        raw = head + await reader.readexactly(length)
        self.requests.append(raw)
        return raw

    async def answer(self, reader: Reader, writer: Writer, data: bytes) -> None:
        await self.read_request(reader)
        writer.write(data)
        await writer.drain()


def keep_alive(*answers: bytes) -> Handler:
    """Answer successive requests on a connection with `answers` in turn, then wait for the client."""

    async def handler(server: Server, reader: Reader, writer: Writer) -> None:
        for data in answers:
            await server.answer(reader, writer, data)
        await reader.read()

    return handler


def once(data: bytes) -> Handler:
    """Answer one request with `data`, then close the connection."""

    async def handler(server: Server, reader: Reader, writer: Writer) -> None:
        await server.answer(reader, writer, data)

    return handler


async def served(
    handler: Handler, case: Case, *, tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None
) -> None:
    async with Server(handler, tls=tls[0] if tls else None) as server:
        pool = Pool(asyncio.get_running_loop(), tls=tls[1] if tls else None)
        try:
            await case(server, pool)
        finally:
            pool.close()


async def post(pool: Pool, server: Server, body: bytes = b'{"q":1}') -> upstream.Response:
    return await pool.post(server.url, HEADERS, body, connect_timeout=2)


async def read_all(pool: Pool, server: Server) -> bytes:
    resp = await post(pool, server)
    try:
        return await resp.read()
    finally:
        resp.release()


def pooled(pool: Pool) -> int:
    return sum(len(conns) for conns in pool.idle.values())


def test_sends_one_request_and_reuses_the_connection(run):
    async def case(server: Server, pool: Pool) -> None:
        for _ in range(2):
            resp = await post(pool, server)
            assert resp.status == 200 and resp.headers["content-type"] == "application/json"
            assert await resp.read() == b'{"ok":true}'
            resp.release()
        assert server.connections == 1
        port = server.url.split(":")[2].split("/")[0]
        assert server.requests[0] == (
            b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: 127.0.0.1:" + port.encode() + b"\r\n"
            b"Content-Type: application/json\r\nAuthorization: Bearer sk-platform\r\n"
            b"User-Agent: " + upstream.USER_AGENT.encode() + b"\r\n"
            b'Content-Length: 7\r\n\r\n{"q":1}'
        )

    run(served(keep_alive(OK, OK), case))


def test_chunked_answer_arrives_piece_by_piece(run):
    async def handler(server: Server, reader: Reader, writer: Writer) -> None:
        await server.answer(reader, writer, SSE_HEAD)
        for piece in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")
        await keep_alive(OK)(server, reader, writer)  # the connection is reused for the next call

    async def case(server: Server, pool: Pool) -> None:
        resp = await post(pool, server)
        assert await resp.readany() == b"data: 1\n\n"
        assert resp.read_nowait() == b""  # nothing more yet
        assert await resp.readany() == b"data: 2\n\n"
        assert await resp.readany() == b""  # the end
        resp.release()
        assert await read_all(pool, server) == b'{"ok":true}'
        assert server.connections == 1

    run(served(handler, case))


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
        + b"x" * 5000,  # ends when the connection does
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,
        b"HTTP/1.0 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,
    ],
    ids=["until-close", "connection-close", "http-1.0"],
)
def test_answers_that_end_the_connection_are_read_whole_and_not_reused(run, answer):
    async def case(server: Server, pool: Pool) -> None:
        for _ in range(2):
            assert await read_all(pool, server) == b"x" * 5000
        assert server.connections == 2

    run(served(once(answer), case))


def test_an_interim_100_continue_is_skipped(run):
    async def case(server: Server, pool: Pool) -> None:
        resp = await post(pool, server)
        assert resp.status == 200 and "content-length" in resp.headers
        assert await resp.read() == b'{"ok":true}'
        resp.release()

    run(served(keep_alive(b"HTTP/1.1 100 Continue\r\n\r\n" + OK), case))


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"", Disconnected),  # closed before answering
        (b"\x00\xffgarbage-not-http\r\n\r\n", ProtocolFailure),
    ],
    ids=["closed", "garbage"],
)
def test_no_answer_or_not_http_fails_the_call(run, answer, error):
    async def case(server: Server, pool: Pool) -> None:
        with pytest.raises(error):
            await post(pool, server)
        assert pooled(pool) == 0  # the spent connection is not pooled

    run(served(once(answer), case))


def test_a_body_cut_short_is_an_error_not_an_end(run):
    async def case(server: Server, pool: Pool) -> None:
        resp = await post(pool, server)
        with pytest.raises(Disconnected):
            await resp.read()
        resp.release()

    run(served(once(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10), case))


def test_a_refused_connection_says_so(run):
    async def case() -> None:
        async with Server(keep_alive()) as server:
            url = server.url
        with pytest.raises(ConnectFailed):
            await Pool(asyncio.get_running_loop()).post(url, HEADERS, b"{}", connect_timeout=2)

    run(case())


def test_an_answer_released_unread_or_a_cancelled_call_never_goes_back_to_the_pool(run):
    async def handler(server: Server, reader: Reader, writer: Writer) -> None:
        if server.connections == 1:  # half a body
            await server.answer(reader, writer, b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n0123456789")
        else:
            await server.read_request(reader)  # never answers
        await reader.read()

    async def case(server: Server, pool: Pool) -> None:
        resp = await post(pool, server)
        resp.release()  # before the body was read whole: closed at once (a client that left)
        assert resp._conn.closed
        call = asyncio.ensure_future(post(pool, server))
        await asyncio.sleep(0.1)
        assert server.connections == 2  # the first connection was not reused
        call.cancel()  # while waiting for the answer's head
        with pytest.raises(asyncio.CancelledError):
            await call
        assert pooled(pool) == 0

    run(served(handler, case))


def test_a_stream_left_mid_answer_closes_its_connection_at_once(run):
    """A client that disconnects mid-stream: the provider must see the connection close now, not later."""
    closed = asyncio.Event()

    async def handler(server: Server, reader: Reader, writer: Writer) -> None:
        await server.answer(reader, writer, SSE_HEAD + b"b\r\ndata: tok\n\n\r\n")
        await reader.read()  # returns when the client closes
        closed.set()

    async def case(server: Server, pool: Pool) -> None:
        resp = await post(pool, server)
        assert await resp.readany() == b"data: tok\n\n"
        resp.release()  # not at its end
        await asyncio.wait_for(closed.wait(), 0.5)

    run(served(handler, case))


@pytest.mark.parametrize("terminator_after", [0.05, None], ids=["end-arrives", "end-never-arrives"])
def test_a_stream_released_at_done_waits_for_its_end_to_pool_the_connection(
    run, monkeypatch, terminator_after
):
    """Providers write `data: [DONE]` and the chunked terminator separately; the caller stops at [DONE]."""
    monkeypatch.setattr(http1, "DRAIN_SECONDS", 0.3)

    async def handler(server: Server, reader: Reader, writer: Writer) -> None:
        await server.answer(reader, writer, SSE_HEAD + b"e\r\ndata: [DONE]\n\n\r\n")
        if terminator_after is None:
            await reader.read()  # never ends the answer
            return
        await asyncio.sleep(terminator_after)
        writer.write(b"0\r\n\r\n")
        await keep_alive(OK)(server, reader, writer)

    async def case(server: Server, pool: Pool) -> None:
        resp = await post(pool, server)
        assert await resp.readany() == b"data: [DONE]\n\n"
        resp.release(at_end=True)  # at [DONE], before the terminator
        assert pooled(pool) == 0  # not pooled before its end
        await asyncio.sleep(0.5)
        if terminator_after is None:
            assert pooled(pool) == 0 and resp._conn.closed  # given up after DRAIN_SECONDS
        else:
            assert pooled(pool) == 1
            assert await read_all(pool, server) == b'{"ok":true}'
            assert server.connections == 1

    run(served(handler, case))


def test_idle_connections_expire(run, monkeypatch):
    monkeypatch.setattr(upstream, "IDLE_SECONDS", 0.0)

    async def case(server: Server, pool: Pool) -> None:
        for _ in range(2):
            await read_all(pool, server)
        assert server.connections == 2

    run(served(keep_alive(OK, OK), case))


def test_a_pooled_connection_the_server_closes_leaves_the_pool(run):
    async def case(server: Server, pool: Pool) -> None:
        await read_all(pool, server)
        assert pooled(pool) == 1
        await asyncio.sleep(0.3)  # the server closes the idle connection, as servers do after a while
        assert pooled(pool) == 0
        assert await read_all(pool, server) == b'{"ok":true}'  # on a new connection, not the dead one
        assert server.connections == 2

    run(served(once(OK), case))


def test_a_large_answer_pauses_reading_and_still_arrives_whole(run, monkeypatch):
    monkeypatch.setattr(http1, "READ_HIGH_WATER", 64 * 1024)
    size = 3 * 1024 * 1024

    async def case(server: Server, pool: Pool) -> None:
        resp = await post(pool, server)
        await asyncio.sleep(0.2)  # let it fill past the high-water mark while nobody reads
        conn = resp._conn
        assert conn.paused
        assert len(await resp.read()) == size
        assert not conn.paused
        resp.release()

    run(served(keep_alive(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"y" * size), case))


@pytest.mark.parametrize("wbits", [31, 15], ids=["gzip", "deflate"])
def test_a_compressed_answer_is_understood(run, wbits):
    text = b'{"text": "' + b"hello " * 2000 + b'"}'
    packer = zlib.compressobj(wbits=wbits)
    data = packer.compress(text) + packer.flush()
    name = b"gzip" if wbits == 31 else b"deflate"
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n" % (name, len(data))

    async def case(server: Server, pool: Pool) -> None:
        assert await read_all(pool, server) == text
        assert await read_all(pool, server) == b'{"ok":true}'  # the next answer is not decoded
        assert server.connections == 1

    run(served(keep_alive(answer + data, OK), case))


def _self_signed(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1, and a client context that trusts only it."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


def test_https_verifies_the_certificate(run, tmp_path):
    async def case(server: Server, pool: Pool) -> None:
        assert await read_all(pool, server) == b'{"ok":true}'  # trusting the test certificate
        system = Pool(asyncio.get_running_loop())  # the system's trust store: a self-signed cert fails
        with pytest.raises(ConnectFailed):
            await post(system, server)

    run(served(keep_alive(OK, OK), case, tls=_self_signed(tmp_path)))
