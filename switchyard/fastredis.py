"""A lean, pipelined Redis connection for the hot path's Lua calls (place a hold; settle it).

Why not redis-py's asyncio client here: each of its calls takes a pooled connection, health-checks
it, wraps the command in retry and deprecation shims and packs it in Python -- about 120-180 µs of
CPU a call on the bench box, which was a fifth of a whole request (README "Performance"). This module
keeps one connection per process and event loop, packs commands with hiredis, writes each command
straight to the transport and matches replies to callers in order (Redis answers in order), so
concurrent requests share the socket and their commands pipeline. Everything else (the dashboard,
Celery, the cache, the rest of the gateway's occasional reads) still uses redis-py.

Failure policy (README "Failure policy"): connecting is bounded by CONNECT_TIMEOUT, every reply by
REPLY_TIMEOUT. A connection that times out, is refused or drops fails its pending calls with
redis-py's own ConnectionError / TimeoutError (so `store_unavailable` maps them to a 503) and the next
call connects afresh. A call is never re-sent once written: the Lua scripts are not all idempotent.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import hashlib
import socket
import ssl
from collections.abc import Generator
from typing import Any

import hiredis
from redis.connection import SSLConnection, parse_url
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from switchyard.shared import start_shared

CONNECT_TIMEOUT = 2.0
REPLY_TIMEOUT = 2.0


# Every option a redis:// / rediss:// / unix:// URL can carry, as redis-py parses it (parse_url), and
# what this connection does with it. Anything else in the URL is refused at start-up by name (redis-py
# would refuse it too, on its first connection, with a TypeError).
_HONOURED = {
    "connection_class", "host", "port", "path", "db", "username", "password", "client_name",
    "socket_connect_timeout", "socket_timeout", "socket_keepalive",
    "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_ca_data", "ssl_certfile", "ssl_keyfile",
    "ssl_password", "ssl_check_hostname", "ssl_min_version", "ssl_ciphers",
    "ssl_include_verify_flags", "ssl_exclude_verify_flags",
}  # fmt: skip
# Options of redis-py's pools and reply decoding, not of a connection: this module keeps one socket
# per loop and returns raw replies, so they change nothing here (the cache and Celery still apply them).
_POOL_ONLY = {
    "max_connections", "timeout", "health_check_interval", "decode_responses", "encoding",
    "encoding_errors", "single_connection_client", "lib_name", "lib_version", "socket_read_size",
}  # fmt: skip
# Options that ask for something this connection deliberately never does, refused unless turned off.
_REFUSED_WHEN_ON = {
    "retry_on_timeout": "the hot path never re-sends a Lua call (the scripts are not all idempotent)",
    "ssl_validate_ocsp": "OCSP validation is not implemented by the hot path's Redis connection",
    "ssl_validate_ocsp_stapled": "OCSP validation is not implemented by the hot path's Redis connection",
}


class UnsupportedRedisOption(ValueError):
    """A Redis URL option the hot path's connection cannot honour (the message names it)."""


@dataclasses.dataclass(frozen=True)
class Options:
    """How to reach Redis, from redis-py's own parsing of the URL (parse_url + SSLConnection)."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # a unix socket
    db: int = 0
    username: str | None = None
    password: str | None = None
    client_name: str | None = None
    connect_timeout: float | None = None  # None: CONNECT_TIMEOUT
    reply_timeout: float | None = None  # None: REPLY_TIMEOUT
    keepalive: bool = False
    tls: ssl.SSLContext | None = None
    server_hostname: str | None = None


def _on(value: Any) -> bool:
    return value not in (None, False, 0, "", "0", "false", "False", "no", "off")


def connection_options(url: str) -> Options:
    """The connection `url` describes, every option honoured, or UnsupportedRedisOption naming the one
    that cannot be (also raised for TLS files that cannot be loaded, so start-up fails, not the first
    request)."""
    kwargs = parse_url(url)
    for name, value in kwargs.items():
        if name in _HONOURED or name in _POOL_ONLY:
            continue
        if name in _REFUSED_WHEN_ON:
            if _on(value):
                raise UnsupportedRedisOption(
                    f"the Redis URL option {name} is not supported: {_REFUSED_WHEN_ON[name]}"
                )
            continue
        if name == "protocol" and str(value) in ("2", "3"):
            continue  # the Lua replies read here are the same in RESP2, which this connection speaks
        raise UnsupportedRedisOption(
            f"the Redis URL option {name} is not supported by the hot path's Redis connection"
        )
    secure = "SSL" in getattr(kwargs.get("connection_class"), "__name__", "")
    tls = None
    host = kwargs.get("host", "localhost")
    if secure:
        tls = _tls_context(kwargs, host)
    elif any(name.startswith("ssl_") for name in kwargs):
        bad = next(name for name in kwargs if name.startswith("ssl_"))
        raise UnsupportedRedisOption(f"the Redis URL option {bad} needs a rediss:// URL (TLS)")
    return Options(
        host=host,
        port=int(kwargs.get("port", 6379)),
        path=kwargs.get("path"),
        db=int(kwargs.get("db") or 0),
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        client_name=kwargs.get("client_name"),
        connect_timeout=kwargs.get("socket_connect_timeout"),
        reply_timeout=kwargs.get("socket_timeout"),
        keepalive=bool(kwargs.get("socket_keepalive")),
        tls=tls,
        server_hostname=host if tls is not None else None,
    )


def _tls_context(kwargs: dict[str, Any], host: str) -> ssl.SSLContext:
    """The SSL context redis-py's SSLConnection would wrap its socket in, built from its own reading of
    the options (so "none"/"optional"/"required" and the hostname rule mean exactly what they mean there)."""
    names = {k: v for k, v in kwargs.items() if k.startswith("ssl_") and k not in _REFUSED_WHEN_ON}
    try:
        conn: Any = SSLConnection(host=host, **names)  # (the types-redis stubs lag its attributes)
    except RedisError as exc:
        raise UnsupportedRedisOption(f"the Redis URL's TLS options are invalid: {exc}") from None
    context = ssl.create_default_context()
    context.check_hostname = bool(conn.check_hostname)
    context.verify_mode = conn.cert_reqs
    for flag in conn.ssl_include_verify_flags or ():
        context.verify_flags |= flag
    for flag in conn.ssl_exclude_verify_flags or ():
        context.verify_flags &= ~flag
    try:
        if conn.certfile or conn.keyfile:
            context.load_cert_chain(
                certfile=conn.certfile, keyfile=conn.keyfile, password=conn.certificate_password
            )
        if conn.ca_certs is not None or conn.ca_path is not None or conn.ca_data is not None:
            context.load_verify_locations(cafile=conn.ca_certs, capath=conn.ca_path, cadata=conn.ca_data)
        if conn.ssl_min_version is not None:
            context.minimum_version = conn.ssl_min_version
        if conn.ssl_ciphers:
            context.set_ciphers(conn.ssl_ciphers)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise UnsupportedRedisOption(f"the Redis URL's TLS files or settings cannot be used: {exc}") from None
    return context


def _pack(*args: Any) -> bytes:
    """A command in RESP, packed by hiredis (C)."""
    packed: bytes = hiredis.pack_command(args)
    return packed


class _Protocol(asyncio.Protocol):
    """Replies arrive in the order the commands were written: each completes the oldest waiter."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reply_timeout: float | None = None) -> None:
        self.loop = loop
        self.reply_timeout = reply_timeout  # None: the module's REPLY_TIMEOUT, read at each call
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._out: list[bytes] = []  # commands of this loop iteration, written together by _flush
        # Scripts this connection has sent whole (EVAL): from then on EVALSHA names them. A new
        # connection (after a Redis restart, say) sends each script whole once more.
        self.loaded: set[bytes] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = self.reader.gets()
            except Exception as exc:  # a protocol error: the stream cannot be trusted any more
                self._fail(RedisConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not waiting:  # pragma: no cover - a reply nobody asked for
                self._fail(RedisConnectionError("Redis sent an unexpected reply"))
                return
            fut, _ = waiting.popleft()
            if not fut.done():  # a caller that was cancelled meanwhile gets nothing
                if isinstance(reply, ResponseError):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"Connection to Redis lost: {exc or 'closed by the server'}"))

    def _fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        while self.waiting:
            fut, _ = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(exc)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def send(self, packed: bytes, *, now: bool = False) -> asyncio.Future[Any]:
        """Queue a command; `now` writes it (after this iteration's earlier ones) before returning."""
        if self.lost is not None or self.transport is None or self.transport.is_closing():
            raise RedisConnectionError("Connection to Redis is closed")
        fut = self.loop.create_future()
        if not self.waiting:
            self.transport.write(packed)  # an idle connection: no one to wait for, write at once
        elif now:
            self._out.append(packed)
            self._flush()  # the flush already scheduled finds nothing left to write
        else:
            # Replies are pending: gather this loop iteration's commands into one write.
            if not self._out:
                self.loop.call_soon(self._flush)
            self._out.append(packed)
        self.waiting.append((fut, self.loop.time() + (self.reply_timeout or REPLY_TIMEOUT)))
        if self._watchdog is None:
            self._watchdog = self.loop.call_at(self.waiting[0][1], self._check)
        return fut

    def _flush(self) -> None:
        """One write (one syscall) for every command the requests of this loop iteration sent."""
        out, self._out = self._out, []
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _check(self) -> None:
        """One timer per connection, set for the oldest pending reply's deadline."""
        self._watchdog = None
        if not self.waiting:
            return
        deadline = self.waiting[0][1]
        if self.loop.time() >= deadline:
            limit = self.reply_timeout or REPLY_TIMEOUT
            self._fail(RedisTimeoutError(f"Redis did not answer within {limit:g} s"))
            return
        self._watchdog = self.loop.call_at(deadline, self._check)


class FastRedis:
    """One pipelined connection to `url`, (re)connected on demand, bound to one event loop."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.options = connection_options(url)
        self.loop = loop
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def _connect(self) -> _Protocol:
        o = self.options
        proto = _Protocol(self.loop, o.reply_timeout)
        try:
            if o.path is not None:
                connect = self.loop.create_unix_connection(lambda: proto, o.path)
            else:
                connect = self.loop.create_connection(
                    lambda: proto, o.host, o.port, ssl=o.tls, server_hostname=o.server_hostname
                )
            await asyncio.wait_for(connect, o.connect_timeout or CONNECT_TIMEOUT)
            if o.keepalive and proto.transport is not None:
                sock = proto.transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            hello = []
            if o.password:
                auth = [b"AUTH", *([o.username] if o.username else []), o.password]
                hello.append(proto.send(_pack(*auth)))
            if o.db:
                hello.append(proto.send(_pack(b"SELECT", str(o.db))))
            if o.client_name:
                hello.append(proto.send(_pack(b"CLIENT", b"SETNAME", o.client_name)))
            if hello:
                await asyncio.gather(*hello)
        except ResponseError as exc:  # AUTH, SELECT or SETNAME refused: the connection is not usable
            proto._fail(RedisConnectionError(str(exc)))
            raise AuthenticationError(f"Redis refused the connection's set-up: {exc}") from exc
        except TimeoutError as exc:
            proto._fail(RedisTimeoutError("Timed out connecting to Redis"))
            raise RedisTimeoutError("Timed out connecting to Redis") from exc
        except ssl.SSLError as exc:  # (before OSError, which it is): say it is TLS, and why
            proto._fail(RedisConnectionError(str(exc)))
            raise RedisConnectionError(f"TLS handshake with Redis failed: {exc}") from exc
        except OSError as exc:
            proto._fail(RedisConnectionError(str(exc)))
            raise RedisConnectionError(f"Error connecting to Redis: {exc}") from exc
        return proto

    async def _connection(self) -> _Protocol:
        proto = self._proto
        if proto is not None and proto.lost is None:
            return proto
        if self._connecting is None:
            # Concurrent callers share one connection attempt (in no request's context).
            self._connecting = start_shared(self._connect(), self.loop)
        try:
            proto = await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None
        self._proto = proto
        return proto

    async def execute(self, *args: Any) -> Any:
        proto = self._proto
        if proto is None or proto.lost is not None:
            proto = await self._connection()
        return await proto.send(_pack(*args))

    def issue(self, script: Script, keys: list[Any], args: list[Any], *, now: bool = False) -> Call | None:
        """Send a script call without waiting for it: written to the socket before this returns when
        `now` (else with this loop iteration's other commands), and None when there is no live
        connection to write it on (the caller awaits `evalsha`, which connects). Await the Call."""
        proto = self._proto
        if proto is None or proto.lost is not None:
            return None
        if script.sha in proto.loaded:
            packed = _pack(b"EVALSHA", script.sha, len(keys), *keys, *args)
        else:
            # First use on this connection: EVAL sends the source and Redis caches it (a pipelined
            # EVALSHA behind it is answered after it, so it finds the script).
            packed = _pack(b"EVAL", script.source, len(keys), *keys, *args)
            proto.loaded.add(script.sha)
        try:
            future = proto.send(packed, now=now)
        except RedisConnectionError:  # closing: the awaited path connects afresh
            proto.loaded.discard(script.sha)
            return None
        return Call(self, proto, future, script, keys, args)

    async def evalsha(self, script: Script, keys: list[Any], args: list[Any]) -> Any:
        call = self.issue(script, keys, args)
        if call is None:
            await self._connection()
            call = self.issue(script, keys, args)
            if call is None:  # lost again at once
                raise RedisConnectionError("Connection to Redis is closed")
        return await call

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None


class Call:
    """A script call already written to Redis; awaiting it gives its reply. A NOSCRIPT reply (the
    script cache was flushed since this connection sent the source) is retried once with EVAL."""

    __slots__ = ("args", "client", "future", "keys", "proto", "script")

    def __init__(
        self,
        client: FastRedis,
        proto: _Protocol,
        future: asyncio.Future[Any],
        script: Script,
        keys: list[Any],
        args: list[Any],
    ) -> None:
        self.client, self.proto, self.future = client, proto, future
        self.script, self.keys, self.args = script, keys, args

    def __await__(self) -> Generator[Any, None, Any]:
        return self._reply().__await__()

    async def _reply(self) -> Any:
        try:
            return await self.future
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        self.proto.loaded.discard(self.script.sha)
        return await self.client.evalsha(self.script, self.keys, self.args)


class Script:
    """A Lua script called through the process's FastRedis: `await script(keys=[...], args=[...])`."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source).hexdigest().encode()

    async def __call__(self, keys: list[Any], args: list[Any]) -> Any:
        return await fast_redis().evalsha(self, keys, args)

    def issue(self, keys: list[Any], args: list[Any]) -> Call | None:
        """Written to Redis before this returns (None: no live connection yet); await the Call for
        the reply. See FastRedis.issue."""
        return fast_redis().issue(self, keys, args, now=True)


@functools.cache
def script(source: str) -> Script:
    """The one Script object for a Lua source (its SHA computed once per process)."""
    return Script(source)


_clients: dict[int, tuple[asyncio.AbstractEventLoop, FastRedis]] = {}


def fast_redis() -> FastRedis:
    """The running event loop's FastRedis for settings.REDIS_URL (tests run several loops)."""
    loop = asyncio.get_running_loop()
    entry = _clients.get(id(loop))
    if entry is None or entry[0] is not loop:
        from django.conf import settings

        for key, (other, _client) in list(_clients.items()):
            if other.is_closed():
                del _clients[key]
        entry = _clients[id(loop)] = (loop, FastRedis(settings.REDIS_URL, loop))
    return entry[1]


def reset() -> None:
    """Forget every connection (after fork; when settings.REDIS_URL changes in tests)."""
    for loop, client in _clients.values():
        if not loop.is_closed():
            try:
                client.close()
            except RuntimeError:  # pragma: no cover - the loop is shutting down
                pass
    _clients.clear()
