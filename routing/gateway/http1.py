"""HTTP/1.1 on one upstream connection: the request head written (our User-Agent added), the answer
parsed with httptools (llhttp) as it arrives -- Content-Length, chunked and read-until-close bodies,
gzip/deflate undone, reading paused while more than READ_HIGH_WATER bytes wait unread -- and the
connection handed back to its owner (routing/gateway/upstream.py's Pool) only when its answer was read
whole and the server allows keep-alive. The errors every part of the client raises live here too.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import time
import zlib
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import httptools

READ_HIGH_WATER = 4 * 1024 * 1024  # unread answer bytes before the connection stops reading
# An answer released before its end (a stream's `data: [DONE]` read, the chunked terminator still on
# its way) keeps its connection out of the pool until the end arrives, for at most this long and this
# many more bytes; then the connection is pooled, or closed.
DRAIN_SECONDS = 2.0
DRAIN_BYTES = 64 * 1024


def _version() -> str:
    try:
        return importlib.metadata.version("switchyard")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        return "0"


USER_AGENT = f"Switchyard/{_version()}"
USER_AGENT_LINE = f"User-Agent: {USER_AGENT}\r\n".encode()

Origin = tuple[str, str, int]  # (scheme, host, port)


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
        lines.append(USER_AGENT_LINE)
    return b"".join(lines)


@functools.lru_cache(maxsize=1024)
def target(url: str, method: str = "POST", absolute: bool = False) -> tuple[Origin, bytes]:
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
    form = f"http://{host}{path}" if absolute else path
    head = f"{method} {form} HTTP/1.1\r\nHost: {host}\r\n".encode("latin-1")
    return (parts.scheme, parts.hostname, port), head


class Owner(Protocol):
    """What a connection needs from its pool: the event loop, and somewhere to go back to or leave."""

    loop: asyncio.AbstractEventLoop

    def put(self, conn: Connection) -> None: ...

    def discard(self, conn: Connection) -> None: ...


class Response:
    """One answer: `status`, `headers` (lower-case names), and its body as it arrives."""

    __slots__ = ("_bytes", "_chunks", "_conn", "_exc", "_waiter", "done", "headers", "released", "status")

    def __init__(self, conn: Connection) -> None:
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


class Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request at a time."""

    def __init__(self, pool: Owner, origin: Origin) -> None:
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
