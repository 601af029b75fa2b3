"""The upstream HTTP/1.1 client: one connection pool per process and event loop, for provider calls.

Why not aiohttp here (it still fetches images and serves the test fakes): every provider call is
the same POST of a JSON body with a few headers, answered by JSON or server-sent events. aiohttp's
general machinery around that -- redirects, cookies, proxies, auth, tracing, middlewares, payload
registry, timeouts per call -- cost ~82 us of CPU per call on this box, against ~12 us for a protocol
that writes the request in one call and parses the answer with httptools (llhttp, the parser
uvicorn's fast path uses too); a fifth of a whole request through the gateway. What is kept:
a pool of keep-alive connections per origin, TLS with the system's trust store, Content-Length,
chunked and read-until-close bodies, a connection given back only when its answer was read whole and
the server allows keep-alive, and reading paused while more than READ_HIGH_WATER bytes wait unread.
Never redirects, never retries (a provider call is not idempotent), sends no cookies.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import importlib.metadata
import ipaddress
import os
import socket
import ssl
import time
import urllib.request
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import httptools

from switchyard.timeouts import within

IDLE_SECONDS = 30.0  # a pooled connection unused for longer is closed rather than reused
READ_HIGH_WATER = 4 * 1024 * 1024  # unread answer bytes before the connection stops reading
# An answer released before its end (a stream's `data: [DONE]` read, the chunked terminator still on
# its way) keeps its connection out of the pool until the end arrives, for at most this long and this
# many more bytes; then the connection is pooled, or closed.
DRAIN_SECONDS = 2.0
DRAIN_BYTES = 64 * 1024
# Connections open (busy or idle) per origin and event loop; a call past it waits for one to come free,
# within its connect timeout (SWITCHYARD_UPSTREAM_MAX_CONNECTIONS_PER_ORIGIN).
MAX_PER_ORIGIN = 256
# Happy Eyeballs (RFC 8305): the next address is tried when the previous one failed, or after this long.
HAPPY_EYEBALLS_DELAY = 0.25


def _version() -> str:
    try:
        return importlib.metadata.version("switchyard")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        return "0"


USER_AGENT = f"Switchyard/{_version()}"
_USER_AGENT_LINE = f"User-Agent: {USER_AGENT}\r\n".encode()

Origin = tuple[str, str, int]  # (scheme, host, port)
# (family, socket address) pairs for a host and port; see Pool(resolve=...).
Resolver = Callable[[str, int], Awaitable[list[tuple[int, Any]]]]


class UpstreamError(OSError):
    """The call failed on the wire (the base of the errors below)."""


class ConnectFailed(UpstreamError):
    """No connection could be made (refused, unreachable, DNS, TLS handshake)."""


class Disconnected(UpstreamError):
    """The provider closed the connection before its answer was complete."""


class ProtocolFailure(UpstreamError):
    """The provider's bytes are not HTTP/1.1."""


class HeaderNotEncodable(ValueError):
    """A request header's value cannot be sent (not Latin-1, or a line break in it): the request never
    left, so the provider is not at fault. `name` is the header's name; the value is never kept."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the {name} header cannot be sent in HTTP/1.1")
        self.name = name


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """The header lines (with our User-Agent unless the caller set one), or HeaderNotEncodable. A CR or
    LF in a value would split the request."""
    lines = []
    agent = True
    for name, value in headers.items():
        try:
            line = f"{name}: {value}\r\n".encode("latin-1")
        except UnicodeEncodeError:
            raise HeaderNotEncodable(name) from None
        if line.count(b"\n") != 1 or line.count(b"\r") != 1:
            raise HeaderNotEncodable(name)
        if agent and len(name) == 10 and name.lower() == "user-agent":
            agent = False
        lines.append(line)
    if agent:
        lines.append(_USER_AGENT_LINE)
    return b"".join(lines)


# -- proxies (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY), read once per pool ---------------------------


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy: `host`, `port`, and the Proxy-Authorization header line its URL's credentials make."""

    host: str
    port: int
    authorization: bytes = b""


class ProxyConfigError(ValueError):
    """A proxy variable this client cannot use (the message names it)."""


def _proxy(variable: str, url: str) -> Proxy:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http":
        raise ProxyConfigError(
            f"{variable}={parts.scheme}://...: only http:// proxies are supported (an https upstream is "
            "still end-to-end TLS, tunnelled with CONNECT through the proxy)"
        )
    if not parts.hostname:
        raise ProxyConfigError(f"{variable} has no host")
    try:
        port = parts.port or 80
    except ValueError:
        raise ProxyConfigError(f"{variable} has an invalid port") from None
    auth = b""
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = b"Proxy-Authorization: Basic " + base64.b64encode(pair) + b"\r\n"
    return Proxy(parts.hostname, port, auth)


class Proxies:
    """The environment's proxy variables, as urllib and httpx read them: lower-case names win over
    upper-case ones; HTTP_PROXY for http://, HTTPS_PROXY for https://, ALL_PROXY for either; NO_PROXY a
    comma-separated list of hosts (`example.com` and `.example.com` match it and its subdomains,
    `host:port` only that port, an IP address only itself, `*` everything)."""

    def __init__(self) -> None:
        found = urllib.request.getproxies_environment()
        self._no = found.get("no", "")
        self._by_scheme: dict[str, Proxy] = {}
        for scheme in ("http", "https"):
            url = found.get(scheme) or found.get("all")
            if url:
                names = (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY")
                name = next((n for n in names if os.environ.get(n) == url), names[1])
                self._by_scheme[scheme] = _proxy(name, url)

    @property
    def any(self) -> bool:
        return bool(self._by_scheme)

    def for_origin(self, origin: Origin) -> Proxy | None:
        """The proxy to reach `origin` through, or None to connect directly (decided once per origin)."""
        scheme, host, port = origin
        proxy = self._by_scheme.get(scheme)
        if proxy is None or not self._no:
            return proxy
        if _bypassed(self._no, host, port):
            return None
        return proxy


def _bypassed(no_proxy: str, host: str, port: int) -> bool:
    """Whether NO_PROXY names host:port: `*`; a name matching it or a parent domain (a leading dot
    optional); `name:port` for that port only; an IP address (IPv6 bare or in brackets) only itself."""
    host = host.lower()
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        want: int | None = None
        if entry.startswith("["):  # [v6] or [v6]:port
            name, _, rest = entry[1:].partition("]")
            if rest.startswith(":") and rest[1:].isdigit():
                want = int(rest[1:])
        elif entry.count(":") == 1:
            name, _, digits = entry.partition(":")
            if not digits.isdigit():
                continue
            want = int(digits)
        else:
            name = entry  # a name, an IPv4 address or a bare IPv6 address
        name = name.lstrip(".")
        if want is not None and want != port:
            continue
        if host == name or (not _is_address(host) and host.endswith("." + name)):
            return True
    return False


@functools.lru_cache(maxsize=1024)
def _target(url: str, method: str = "POST", absolute: bool = False) -> tuple[Origin, bytes]:
    """(origin, request line and Host header) for a URL, parsed once per URL. `absolute`: the
    absolute-form request line an HTTP proxy takes for a plain-http upstream."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # an IPv6 literal
    host = name if parts.port is None else f"{name}:{parts.port}"
    target = f"http://{host}{path}" if absolute else path
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n".encode("latin-1")
    return (parts.scheme, parts.hostname, port), head


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _interleave(addresses: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """RFC 8305 section 4: alternate address families, starting with the resolver's first choice."""
    first = [a for a in addresses if a[0] == addresses[0][0]]
    other = [a for a in addresses if a[0] != addresses[0][0]]
    out: list[tuple[int, Any]] = []
    for i in range(max(len(first), len(other))):
        out.extend(group[i] for group in (first, other) if i < len(group))
    return out


async def system_resolve(host: str, port: int) -> list[tuple[int, Any]]:
    """(family, socket address) for every address the system resolver gives for host:port."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[tuple[int, Any]] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if (family, sockaddr) not in seen:
            seen.append((family, sockaddr))
    return seen


class Response:
    """One answer: `status`, `headers` (lower-case names), and its body as it arrives."""

    __slots__ = ("_bytes", "_chunks", "_conn", "_exc", "_waiter", "done", "headers", "released", "status")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = 0
        self.headers: dict[str, str] = {}
        self._chunks: deque[bytes] = deque()
        self._bytes = 0
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.done = False  # the whole body has arrived
        self.released = False

    # -- fed by the connection ---------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._bytes += len(data)
        if self._bytes > READ_HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _finish(self, exc: BaseException | None = None) -> None:
        if self.done:
            return
        self.done = True
        self._exc = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- read by the adapter -----------------------------------------------------------------------

    def read_nowait(self) -> bytes:
        """Everything received and not read yet (b"" when nothing is waiting)."""
        if not self._chunks:
            if self._exc is not None:
                raise self._exc
            return b""
        data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._bytes = 0
        self._conn.resume()
        return data

    async def readany(self) -> bytes:
        """The next bytes of the body; b"" at its end."""
        while not self._chunks and not self.done:
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.read_nowait()

    async def read(self, limit: int = -1) -> bytes:
        """The whole body (or, with `limit`, at least that much of it when it is that long)."""
        parts: list[bytes] = []
        size = 0
        while limit < 0 or size < limit:
            data = await self.readany()
            if not data:
                break
            parts.append(data)
            size += len(data)
        return b"".join(parts)

    def _drop_unread(self) -> None:
        self._chunks.clear()
        self._bytes = 0

    def release(self, *, at_end: bool = False) -> None:
        """Done with this answer: the connection goes back to the pool if the answer was read whole
        and the server keeps connections alive, otherwise it is closed at once (which is what stops a
        provider generating for a client that left). `at_end`: the caller has read the answer's
        logical end (an SSE stream's `[DONE]`), so only the framing is still to come: wait for it
        (DRAIN_SECONDS) and pool the connection then."""
        if self.released:
            return
        self.released = True
        self._conn.finished(self, drain=at_end)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request at a time."""

    def __init__(self, pool: Pool, origin: tuple[str, str, int]) -> None:
        self.pool = pool
        self.origin = origin
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.headers_ready: asyncio.Future[None] | None = None
        self.closed = False
        self.reusable = False  # the current answer ended and the server keeps the connection open
        self.until_close = False  # the answer's body ends when the connection does
        self.paused = False
        self.idle_since = 0.0
        self.inflate: Any = None  # a zlib decompressor when the answer is gzip/deflate-encoded
        self.draining: asyncio.TimerHandle | None = None  # see DRAIN_SECONDS
        self.drained = 0
        self.counted = False  # holds one of its origin's places in the pool (see Pool.discard)

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's are not asyncio.Transport subclasses)

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes nobody asked for: the connection is not in a usable state
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolFailure(f"invalid HTTP from the provider: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        resp = self.response
        if resp is not None and not resp.done:
            if self.until_close and resp.status:
                resp._finish()  # the body of an answer with neither length nor chunks ends here
            else:
                self._fail(Disconnected("the provider closed the connection before its answer ended"))

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self.response.headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        resp = self.response
        assert resp is not None
        status = self.parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            resp.headers.clear()
            return
        resp.status = status
        headers = resp.headers
        self.until_close = "content-length" not in headers and "chunked" not in headers.get(
            "transfer-encoding", ""
        )
        # We ask for no encoding; a server that compresses anyway is still understood.
        encoding = headers.get("content-encoding", "").strip().lower()
        self.inflate = zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding in ("gzip", "deflate") else None
        if self.headers_ready is not None and not self.headers_ready.done():
            self.headers_ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        if self.draining is not None:  # released: the rest is not wanted, only its end
            self.drained += len(body)
            if self.drained > DRAIN_BYTES:
                self.close()
            return
        if self.inflate is not None:
            try:
                body = self.inflate.decompress(body)
            except zlib.error as exc:
                raise ProtocolFailure(f"undecodable compressed answer: {exc}") from exc
            if not body:
                return
        self.response._feed(body)

    def on_message_complete(self) -> None:
        resp = self.response
        if resp is None or not resp.status:
            return  # the end of an interim answer
        self.reusable = self.parser.should_keep_alive() and not self.until_close
        if self.draining is not None:
            self.draining.cancel()
            self.draining = None
            resp._finish()
            self.finished(resp)
            return
        if self.inflate is not None and (rest := self.inflate.flush()):
            resp._feed(rest)
        resp._finish()

    # -- used by the pool and the response ---------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        if self.headers_ready is not None and not self.headers_ready.done():
            self.headers_ready.set_exception(exc)
        if self.response is not None:
            self.response._finish(exc)

    async def send(self, head: bytes, header_lines: bytes, body: bytes | None) -> Response:
        assert self.transport is not None
        resp = self.response = Response(self)
        self.reusable = self.until_close = False
        self.headers_ready = self.loop.create_future()
        if body is None:  # (a GET)
            self.transport.write(b"".join((head, header_lines, b"\r\n")))
        else:
            self.transport.write(
                b"".join((head, header_lines, b"Content-Length: %d\r\n\r\n" % len(body), body))
            )
        try:
            await self.headers_ready
        except BaseException:
            self.close()  # cancelled or failed before the answer started: the connection is spent
            raise
        finally:
            self.headers_ready = None
        return resp

    def finished(self, resp: Response, *, drain: bool = False) -> None:
        if self.response is not resp or self.draining is not None:
            return
        if drain and not resp.done and resp._exc is None and not self.closed and not self.until_close:
            resp._drop_unread()
            self.drained = 0
            self.resume()
            self.draining = self.loop.call_later(DRAIN_SECONDS, self.close)
            return
        self.response = None
        if resp.done and resp._exc is None and self.reusable and not self.closed:
            self.resume()
            self.idle_since = time.monotonic()
            self.pool.put(self)
        else:
            self.close()

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.draining is not None:
            self.draining.cancel()
            self.draining = None
        if self.transport is not None:
            self.transport.close()


def tls_context(ca_bundle: str = "") -> ssl.SSLContext:
    """Verification on, against the system's trust store (OpenSSL's, so SSL_CERT_FILE / SSL_CERT_DIR
    replace it as they do for every OpenSSL client) plus `ca_bundle`, a PEM file of extra CAs
    (SWITCHYARD_UPSTREAM_CA_BUNDLE). A bundle that cannot be loaded is a ValueError naming it."""
    context = ssl.create_default_context()
    if ca_bundle:
        try:
            context.load_verify_locations(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"SWITCHYARD_UPSTREAM_CA_BUNDLE={ca_bundle} cannot be loaded: {exc}") from None
    return context


_UNDECIDED = Proxy("", 0)


class Pool:
    """Keep-alive connections per origin, for one event loop: at most `max_per_origin` open per origin,
    reached directly or through the environment's proxy (decided once per origin)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        tls: ssl.SSLContext | None = None,
        *,
        max_per_origin: int = MAX_PER_ORIGIN,
        proxies: Proxies | None = None,
        resolve: Resolver | None = None,
    ) -> None:
        self.loop = loop
        self.idle: dict[Origin, list[_Connection]] = {}
        self._tls = tls  # None: tls_context(), made on the first https call
        self.max_per_origin = max(1, max_per_origin)
        self.open: dict[Origin, int] = {}  # connections open or being opened, per origin
        self._waiters: dict[Origin, deque[asyncio.Future[_Connection | None]]] = {}
        self.proxies = Proxies() if proxies is None else proxies
        self._proxied = self.proxies.any
        self._routes: dict[Origin, Proxy | None] = {}
        self.resolve: Resolver = resolve or system_resolve

    def put(self, conn: _Connection) -> None:
        waiters = self._waiters.get(conn.origin)
        while waiters:  # a call waiting for a free connection gets this one
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.setdefault(conn.origin, []).append(conn)

    def discard(self, conn: _Connection) -> None:
        """A closed connection leaves the pool at once, and frees its place for a waiting call."""
        idle = self.idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)
        if conn.counted:
            conn.counted = False
            self._free(conn.origin)

    def _free(self, origin: Origin) -> None:
        self.open[origin] -= 1
        waiters = self._waiters.get(origin)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # a place is free: connect
                return

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self.idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have been closed
            if not conn.closed and now - conn.idle_since < IDLE_SECONDS:
                return conn
            conn.close()
        return None

    def route(self, origin: Origin) -> Proxy | None:
        """The proxy for `origin` (None: direct), decided on its first call and kept."""
        proxy = self._routes.get(origin, _UNDECIDED)
        if proxy is _UNDECIDED:
            proxy = self._routes[origin] = self.proxies.for_origin(origin)
        return proxy

    async def _acquire(self, origin: Origin, timeout: float, proxy: Proxy | None) -> _Connection:
        """A pooled connection, a new one while the origin is under its cap, or the next to come free
        within `timeout`."""
        deadline = self.loop.time() + timeout
        while True:
            conn = self._take(origin)
            if conn is not None:
                return conn
            if self.open.get(origin, 0) < self.max_per_origin:
                return await self._connect(origin, max(0.0, deadline - self.loop.time()), proxy)
            waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
            self._waiters.setdefault(origin, deque()).append(waiter)
            try:
                with within(max(0.0, deadline - self.loop.time())):
                    conn = await waiter
            except TimeoutError:
                raise ConnectFailed(
                    f"{self.max_per_origin} connections to {origin[1]}:{origin[2]} are busy and none came "
                    f"free within {timeout:g}s (SWITCHYARD_UPSTREAM_MAX_CONNECTIONS_PER_ORIGIN)"
                ) from None
            except BaseException:
                handed = waiter.result() if waiter.done() and not waiter.cancelled() else None
                if handed is not None:
                    self.put(handed)  # handed over as this call was cancelled: pass it on
                raise
            finally:
                waiters = self._waiters.get(origin)
                if waiters and waiter in waiters:
                    waiters.remove(waiter)
            if conn is not None and not conn.closed:
                return conn

    async def _connect(self, origin: Origin, timeout: float, proxy: Proxy | None) -> _Connection:
        scheme, host, port = origin
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            if self._tls is None:
                self._tls = tls_context()
            tls = self._tls
        conn = _Connection(self, origin)
        self.open[origin] = self.open.get(origin, 0) + 1
        sock: socket.socket | None = None
        try:
            with within(timeout):
                if proxy is None:
                    sock = await self._open_socket(host, port)
                else:
                    sock = await self._open_socket(proxy.host, proxy.port)
                    if tls is not None:
                        await self._tunnel(sock, host, port, proxy)
                await self.loop.create_connection(
                    lambda: conn, sock=sock, ssl=tls, server_hostname=host if tls else None
                )
        except BaseException as exc:
            if sock is not None and conn.transport is None:
                sock.close()
            self._free(origin)
            if isinstance(exc, OSError) and not isinstance(exc, (TimeoutError, UpstreamError)):
                reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
                raise ConnectFailed(str(reason)) from exc  # (ssl.SSLError included)
            raise
        conn.counted = True
        return conn

    async def _open_socket(self, host: str, port: int) -> socket.socket:
        """A connected socket to host:port: every address tried in turn, the next one started when the
        previous failed or after HAPPY_EYEBALLS_DELAY (RFC 8305), the first to connect kept."""
        if _is_address(host):
            family: int = socket.AF_INET6 if ":" in host else socket.AF_INET
            addresses: list[tuple[int, Any]] = [(family, (host, port))]
        else:
            try:
                addresses = _interleave(await self.resolve(host, port))
            except socket.gaierror as exc:
                raise ConnectFailed(f"cannot resolve {host}: {exc.strerror}") from exc
            if not addresses:
                raise ConnectFailed(f"{host} has no address")
        if len(addresses) == 1:
            return await self._sock_connect(*addresses[0])
        errors: list[OSError] = []
        pending: set[asyncio.Task[socket.socket]] = set()
        try:
            for family, address in addresses:
                pending.add(self.loop.create_task(self._sock_connect(family, address)))
                done, pending = await asyncio.wait(
                    pending, timeout=HAPPY_EYEBALLS_DELAY, return_when=asyncio.FIRST_COMPLETED
                )
                if (sock := _first_connected(done, errors)) is not None:
                    return sock
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if (sock := _first_connected(done, errors)) is not None:
                    return sock
        finally:
            for task in pending:
                if task.done() and not task.cancelled() and task.exception() is None:
                    task.result().close()
                else:
                    task.cancel()
        reasons = "; ".join(sorted({e.strerror or type(e).__name__ for e in errors}))
        raise ConnectFailed(f"no address of {host} answered ({reasons})")

    async def _sock_connect(self, family: int, address: Any) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await self.loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _tunnel(self, sock: socket.socket, host: str, port: int, proxy: Proxy) -> None:
        """CONNECT host:port through the proxy on `sock`; TLS to the provider then runs inside it."""
        name = f"[{host}]" if ":" in host else host
        request = f"CONNECT {name}:{port} HTTP/1.1\r\nHost: {name}:{port}\r\n".encode("latin-1")
        await self.loop.sock_sendall(sock, request + proxy.authorization + _USER_AGENT_LINE + b"\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = await self.loop.sock_recv(sock, 4096)
            if not data:
                raise ConnectFailed(f"the proxy {proxy.host}:{proxy.port} closed the connection on CONNECT")
            answer += data
            if len(answer) > 65536:
                raise ConnectFailed(f"the proxy {proxy.host}:{proxy.port} sent an oversized CONNECT answer")
        status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].startswith("2"):
            raise ConnectFailed(
                f"the proxy {proxy.host}:{proxy.port} refused to tunnel to {name}:{port}: {status_line[:100]}"
            )

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        connect_timeout: float,
    ) -> Response:
        """Send one request; return once the answer's status and headers are in (its body follows).
        HeaderNotEncodable before any connection is taken when a header cannot be sent."""
        origin, head = _target(url, method)
        lines = encode_headers(headers)
        proxy = self.route(origin) if self._proxied else None
        if proxy is not None and origin[0] == "http":  # through the proxy: absolute-form, its credentials
            head = _target(url, method, True)[1]
            lines += proxy.authorization
        conn = self._take(origin) or await self._acquire(origin, connect_timeout, proxy)
        return await conn.send(head, lines, body)

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, connect_timeout: float
    ) -> Response:
        """POST `body` (`request`, written out again: the hot path's call, one coroutine fewer)."""
        origin, head = _target(url)
        lines = encode_headers(headers)
        proxy = self.route(origin) if self._proxied else None
        if proxy is not None and origin[0] == "http":
            head = _target(url, "POST", True)[1]
            lines += proxy.authorization
        conn = self._take(origin) or await self._acquire(origin, connect_timeout, proxy)
        return await conn.send(head, lines, body)

    def close(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                conn.close()
        self.idle.clear()


def _first_connected(done: set[asyncio.Task[socket.socket]], errors: list[OSError]) -> socket.socket | None:
    """The first connected socket among finished attempts (any others closed); failures kept in `errors`."""
    found: socket.socket | None = None
    for task in done:
        exc = task.exception()
        if exc is None:
            if found is None:
                found = task.result()
            else:
                task.result().close()
        elif isinstance(exc, OSError):
            errors.append(exc)
        else:
            raise exc
    return found


def check_configuration(ca_bundle: str = "") -> None:
    """Start-up check: the proxy variables and the CA bundle can be used (ValueError naming them)."""
    Proxies()
    tls_context(ca_bundle)


_pools: dict[int, Pool] = {}


def upstream_pool() -> Pool:
    """The running loop's pool; created on first use, reused for every upstream call."""
    loop = asyncio.get_running_loop()
    pool = _pools.get(id(loop))
    if pool is None or pool.loop is not loop:
        for key, other in list(_pools.items()):
            if other.loop.is_closed():
                del _pools[key]
        from django.conf import settings

        pool = _pools[id(loop)] = Pool(
            loop,
            tls_context(settings.SWITCHYARD_UPSTREAM_CA_BUNDLE),
            max_per_origin=settings.SWITCHYARD_UPSTREAM_MAX_CONNECTIONS_PER_ORIGIN,
        )
    return pool


async def close_upstream_pool() -> None:
    pool = _pools.pop(id(asyncio.get_running_loop()), None)
    if pool is not None:
        pool.close()
