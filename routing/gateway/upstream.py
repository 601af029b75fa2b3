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

This module is the pool and the calls the adapters make; the wire protocol on one connection is
http1.py, opening a socket (Happy Eyeballs, TLS context) connect.py, the proxy environment and CONNECT
proxy.py. Every public name of those the callers use is importable from here too.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from collections.abc import Mapping

from django.conf import settings

from routing.gateway.connect import Resolver, open_socket, system_resolve, tls_context
from routing.gateway.http1 import (
    USER_AGENT,
    ConnectFailed,
    Connection,
    Disconnected,
    HeaderNotEncodable,
    Origin,
    ProtocolFailure,
    Response,
    UpstreamError,
    encode_headers,
    target,
)
from routing.gateway.proxy import Proxies, Proxy, ProxyConfigError, tunnel
from switchyard.timeouts import within

__all__ = [
    "USER_AGENT",
    "ConnectFailed",
    "Disconnected",
    "HeaderNotEncodable",
    "Origin",
    "Pool",
    "ProtocolFailure",
    "Proxies",
    "Proxy",
    "ProxyConfigError",
    "Resolver",
    "Response",
    "UpstreamError",
    "check_configuration",
    "close_upstream_pool",
    "encode_headers",
    "system_resolve",
    "tls_context",
    "upstream_pool",
]

IDLE_SECONDS = 30.0  # a pooled connection unused for longer is closed rather than reused
# Connections open (busy or idle) per origin and event loop; a call past it waits for one to come free,
# within its connect timeout (SWITCHYARD_UPSTREAM_MAX_CONNECTIONS_PER_ORIGIN).
MAX_PER_ORIGIN = 256

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
        self.idle: dict[Origin, list[Connection]] = {}
        self._tls = tls  # None: tls_context(), made on the first https call
        self.max_per_origin = max(1, max_per_origin)
        self.open: dict[Origin, int] = {}  # connections open or being opened, per origin
        self._waiters: dict[Origin, deque[asyncio.Future[Connection | None]]] = {}
        self.proxies = Proxies() if proxies is None else proxies
        self._proxied = self.proxies.any
        self._routes: dict[Origin, Proxy | None] = {}
        self.resolve: Resolver = resolve or system_resolve

    def put(self, conn: Connection) -> None:
        waiters = self._waiters.get(conn.origin)
        while waiters:  # a call waiting for a free connection gets this one
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.setdefault(conn.origin, []).append(conn)

    def discard(self, conn: Connection) -> None:
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

    def _take(self, origin: Origin) -> Connection | None:
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

    async def _acquire(self, origin: Origin, timeout: float, proxy: Proxy | None) -> Connection:
        """A pooled connection, a new one while the origin is under its cap, or the next to come free
        within `timeout`."""
        deadline = self.loop.time() + timeout
        while True:
            conn = self._take(origin)
            if conn is not None:
                return conn
            if self.open.get(origin, 0) < self.max_per_origin:
                return await self._connect(origin, max(0.0, deadline - self.loop.time()), proxy)
            waiter: asyncio.Future[Connection | None] = self.loop.create_future()
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

    async def _connect(self, origin: Origin, timeout: float, proxy: Proxy | None) -> Connection:
        scheme, host, port = origin
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            if self._tls is None:
                self._tls = tls_context()
            tls = self._tls
        conn = Connection(self, origin)
        self.open[origin] = self.open.get(origin, 0) + 1
        sock: socket.socket | None = None
        try:
            with within(timeout):
                if proxy is None:
                    sock = await open_socket(self.loop, self.resolve, host, port)
                else:
                    sock = await open_socket(self.loop, self.resolve, proxy.host, proxy.port)
                    if tls is not None:
                        await tunnel(self.loop, sock, host, port, proxy)
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
        origin, head = target(url, method)
        lines = encode_headers(headers)
        proxy = self.route(origin) if self._proxied else None
        if proxy is not None and origin[0] == "http":  # through the proxy: absolute-form, its credentials
            head = target(url, method, True)[1]
            lines += proxy.authorization
        conn = self._take(origin) or await self._acquire(origin, connect_timeout, proxy)
        return await conn.send(head, lines, body)

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, connect_timeout: float
    ) -> Response:
        """POST `body` (`request`, written out again: the hot path's call, one coroutine fewer)."""
        origin, head = target(url)
        lines = encode_headers(headers)
        proxy = self.route(origin) if self._proxied else None
        if proxy is not None and origin[0] == "http":
            head = target(url, "POST", True)[1]
            lines += proxy.authorization
        conn = self._take(origin) or await self._acquire(origin, connect_timeout, proxy)
        return await conn.send(head, lines, body)

    def close(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                conn.close()
        self.idle.clear()


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
